"""One lane per destination (issue 15 point 3): a destination that hangs delays no other; a circuit breaker per
destination; several dispatchers never send an object twice. Real peers: Orthanc, dcmtk storescp, our SCP, a
socket that never answers and a pynetdicom SCP that never answers C-STORE."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import update

from dicomnode.cli import main
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import CircuitState, DeliveryState, DestinationState, JobState
from dicomnode.delivery import Dispatcher
from dicomnode.scp import ScpSettings, StorageSCP
from dicomnode.store import InstanceStore
from tests.integration.test_scp import RecordingSink
from tests.support.cli import cli_env
from tests.support.deliveries import (
    ct_files,
    deliveries_to,
    delivery_settings,
    destination,
    job_state,
    queue_deliveries,
)
from tests.support.net import free_port, wait_for
from tests.support.orthanc import Orthanc, dcmtk, wait_for_port
from tests.support.peers import BlackHole, ScriptedSCP, StuckSCP

pytestmark = pytest.mark.integration


@contextmanager
def _dispatching(dispatchers: Sequence[Dispatcher]) -> Iterator[None]:
    stop = threading.Event()
    threads = [threading.Thread(target=d.run_forever, args=(stop,), daemon=True) for d in dispatchers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)


def test_a_hanging_destination_delays_no_other(tmp_path: Path, orthanc: Orthanc) -> None:
    """Two destinations hang for a minute each (one never answers the association request, one never
    answers C-STORE), queued before the healthy one: Orthanc gets every file while both still hang."""
    paths = ct_files(tmp_path, 3)
    with BlackHole() as hole, StuckSCP() as stuck:
        settings = delivery_settings(
            tmp_path,
            f"sqlite:///{tmp_path / 'n.sqlite3'}",
            [
                destination("HOLE", hole.port, acse_timeout_seconds=60),
                destination("STUCK", stuck.port, dimse_timeout_seconds=60),
                destination(orthanc.aet, orthanc.dicom_port),
            ],
        )
        db = Database(settings.database_url)
        db.upgrade()
        job_id = queue_deliveries(db, ["HOLE", "STUCK", orthanc.aet], paths)
        with _dispatching([Dispatcher(settings, db)]):
            wait_for(
                lambda: all(d.state is DeliveryState.DONE for d in deliveries_to(db, orthanc.aet)),
                30,
                "Orthanc's deliveries (sent while the other two destinations hang)",
            )
            # Both hanging destinations are still in their first attempt (a lease held, nothing recorded).
            assert stuck.entered.is_set() and hole.connections
            for name in ("HOLE", "STUCK"):
                assert [(d.state, d.attempts) for d in deliveries_to(db, name)] == [(DeliveryState.PENDING, 0)] * 3
                assert all(d.lease_owner for d in deliveries_to(db, name)[:1])
            assert job_state(db, job_id) is JobState.DELIVERING  # done only when every delivery has ended
            stuck.release()
            wait_for(
                lambda: all(d.state is DeliveryState.DONE for d in deliveries_to(db, "STUCK")), 30, "STUCK released"
            )
            hole.close()
            wait_for(lambda: deliveries_to(db, "HOLE")[0].attempts == 1, 30, "the black hole's association to end")
        assert orthanc.sop_instance_uids() == {d.sop_instance_uid for d in deliveries_to(db, orthanc.aet)}
        assert sorted(stuck.received) == sorted(d.sop_instance_uid for d in deliveries_to(db, "STUCK"))
        assert deliveries_to(db, "HOLE")[0].state is DeliveryState.PENDING  # network failure: retried later
        db.dispose()


@pytest.fixture
def storescp_on() -> Iterator[Any]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(port: int, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        command = [dcmtk("storescp"), "-aet", "PACS", "-od", str(out_dir), str(port)]
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(port)

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def _circuit(db: Database, name: str) -> DestinationState:
    with db.session() as s:
        state = s.get(DestinationState, name)
        assert state is not None
        return state


def test_the_circuit_opens_after_failures_and_one_probe_closes_it(
    tmp_path: Path, storescp_on: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nobody listens yet
    settings = delivery_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'n.sqlite3'}",
        [destination("PACS", port)],
        circuit_failures=2,
        circuit_cooldown_seconds=600,
        backoff_base_seconds=0.01,
        backoff_cap_seconds=0.02,
        batch_size=2,
    )
    db = Database(settings.database_url)
    db.upgrade()
    paths = ct_files(tmp_path, 4)
    job_id = queue_deliveries(db, ["PACS"], paths)
    dispatcher = Dispatcher(settings, db)
    wait_for(lambda: dispatcher.run_once() and _circuit(db, "PACS").consecutive_failures >= 2, 30, "two failures")
    state = _circuit(db, "PACS")
    assert state.circuit is CircuitState.OPEN and "could not connect" in (state.last_error or "")
    attempts = [d.attempts for d in deliveries_to(db, "PACS")]
    assert dispatcher.run_once() == 0  # open: nothing is sent during the cool-down
    assert [d.attempts for d in deliveries_to(db, "PACS")] == attempts

    assert main(["status", "--data-dir", str(settings.node.data_dir), "--database-url", settings.database_url]) == 0
    assert "circuit OPEN" in capsys.readouterr().out

    storescp_on(port, tmp_path / "received")
    with db.session() as s:  # the cool-down ends
        s.execute(update(DestinationState).values(backoff_until=None))
    wait_for(lambda: all(d.next_attempt_at <= repo.utcnow() for d in deliveries_to(db, "PACS")), 5, "due deliveries")
    assert dispatcher.run_once() == 1  # half-open: exactly one probe
    assert _circuit(db, "PACS").circuit is CircuitState.CLOSED
    wait_for(lambda: dispatcher.run_once() == 0 and job_state(db, job_id) is JobState.DONE, 30, "the rest")
    assert len(list((tmp_path / "received").iterdir())) == 4


def test_several_dispatchers_send_each_object_once(tmp_path: Path, database_url: str) -> None:
    """Three dispatchers (as on three hosts) share one queue of 40 deliveries in batches of 3."""
    sink = RecordingSink()
    scp_settings = ScpSettings(ae_title="PACS", host="127.0.0.1", port=0)
    with StorageSCP(scp_settings, InstanceStore(tmp_path / "store"), sink) as scp:
        settings = delivery_settings(tmp_path, database_url, [destination("PACS", scp.port)], batch_size=3)
        db = Database(settings.database_url)
        db.upgrade()
        paths = ct_files(tmp_path, 40)
        job_id = queue_deliveries(db, ["PACS"], paths)
        dispatchers = [Dispatcher(settings, db, owner=f"host{i}") for i in range(3)]
        with _dispatching(dispatchers):
            wait_for(lambda: job_state(db, job_id) is JobState.DONE, 60, "every delivery")
        db.dispose()
    received = [i.sop_instance_uid for i in sink.instances]
    assert len(received) == len(set(received)) == 40


def test_parallel_associations_keep_each_jobs_results_together(tmp_path: Path) -> None:
    """max_associations = 3: a forwarded series of 30 goes over three associations at once; the three
    results of an analysis (here three files of one job) travel together over one of them."""
    sink = RecordingSink()
    with StorageSCP(ScpSettings(ae_title="PACS", host="127.0.0.1", port=0), InstanceStore(tmp_path / "s"), sink) as scp:
        url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
        settings = delivery_settings(tmp_path, url, [destination("PACS", scp.port, max_associations=3)])
        db = Database(url)
        db.upgrade()
        series_job = queue_deliveries(db, ["PACS"], ct_files(tmp_path, 30, seed=1), key="series")
        results = ct_files(tmp_path, 3, seed=2)
        results_job = queue_deliveries(db, ["PACS"], results, key="results")
        dispatcher = Dispatcher(settings, db)
        assert dispatcher.run_once() == 33
        assert job_state(db, series_job) is JobState.DONE and job_state(db, results_job) is JobState.DONE
        db.dispose()
    assert len(sink.started) == 3
    assert len({i.sop_instance_uid for i in sink.instances}) == 33
    result_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in results}
    assert len({i.association_id for i in sink.instances if i.sop_instance_uid in result_uids}) == 1


def test_only_one_dispatcher_wins_the_probe_of_an_open_circuit(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()
    with db.session() as s:
        s.add(DestinationState(name="PACS", consecutive_failures=5, circuit=CircuitState.OPEN, paused=False))
    wins = []
    for _ in range(3):  # the cool-down has ended; three dispatchers ask in turn
        with db.session() as s:
            wins.append(repo.take_probe(s, "PACS", hold_seconds=60))
    assert wins == [True, False, False]
    assert _circuit(db, "PACS").circuit is CircuitState.HALF_OPEN
    db.dispose()


LEASE_S = 2.0
# Another dispatcher, as on another host: its own process (SIGKILL-able), the settings as JSON, its owner name.
_DISPATCHER = """
import sys, threading
from dicomnode.config import Settings
from dicomnode.db.engine import Database
from dicomnode.delivery import Dispatcher
settings = Settings.model_validate_json(sys.argv[1])
Dispatcher(settings, Database(settings.database_url), owner=sys.argv[2]).run_forever(threading.Event())
"""


def _leased_by(db: Database, owner: str, key: str) -> bool:
    return any(d.lease_owner == owner for d in deliveries_to(db, "SCRIPTED") if key in d.path)


def test_a_long_send_keeps_its_lease_and_a_killed_dispatchers_is_taken_over_soon(tmp_path: Path) -> None:
    """A 2 s lease and a destination that answers each C-STORE after 0.4 s: a batch of 8 takes ~3.2 s, longer
    than the lease. Dispatcher A (its own process) sends it while B polls the queue: A renews its lease, B takes
    nothing over, each object arrives once. Then A is SIGKILLed in the middle of the next batch: B takes it
    over within a few seconds (the lease; before, at least 600 s) and every object of it arrives; those sent
    twice are only ones A had sent before it died (A records a batch when it is done)."""
    with ScriptedSCP([0x0000], delay_seconds=0.4) as pacs:
        url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
        destinations = [destination("SCRIPTED", pacs.port)]
        settings = delivery_settings(tmp_path, url, destinations, lease_seconds=LEASE_S, batch_size=8, poll_seconds=0.1)
        db = Database(url)
        db.upgrade()
        first = queue_deliveries(db, ["SCRIPTED"], ct_files(tmp_path, 8, seed=1), key="first")
        command = [sys.executable, "-c", _DISPATCHER, settings.model_dump_json(), "A"]
        a = subprocess.Popen(command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: pacs.answered, 60, "A sending the first batch")
            with _dispatching([Dispatcher(settings, db, owner="B")]):
                wait_for(lambda: job_state(db, first) is JobState.DONE, 30, "the first batch")
            first_uids = [uid for uid, _ in pacs.answered]
            assert len(first_uids) == len(set(first_uids)) == 8, "an object of a long send was sent twice"

            second = queue_deliveries(db, ["SCRIPTED"], ct_files(tmp_path, 8, seed=2), key="second")
            wait_for(lambda: len(pacs.answered) >= 10, 30, "A in the middle of the second batch")
            assert _leased_by(db, "A", "ct2")
            a.kill()
            a.wait(timeout=10)
            killed_at = time.monotonic()
            with _dispatching([Dispatcher(settings, db, owner="B")]):
                wait_for(lambda: _leased_by(db, "B", "ct2"), 5 * LEASE_S, "B taking over the killed A's batch")
                took_over_s = time.monotonic() - killed_at
                sent_by_a = {uid for uid, _ in pacs.answered[8:]}
                wait_for(lambda: job_state(db, second) is JobState.DONE, 30, "the second batch")
        finally:
            a.kill()
            a.wait(timeout=10)
        db.dispose()
    second_uids = [uid for uid, _ in pacs.answered[8:]]
    print(f"taken over {took_over_s:.1f} s after the SIGKILL; {len(second_uids) - 8} of 8 sent twice")
    assert len(set(second_uids)) == 8
    assert {uid for uid in second_uids if second_uids.count(uid) > 1} <= sent_by_a
