"""The job queue, completion and delivery under real traffic: one test per property of issue 7, on SQLite and
Postgres where the database matters, with dcmtk storescu as the modalities and Orthanc as the PACS."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import func, select

from dicomnode.assembly import assemble_once
from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import Delivery, DeliveryState, Instance, Job, JobKind, JobState, Series, utcnow
from dicomnode.db.queries import retry_job
from dicomnode.delivery import Dispatcher
from dicomnode.errors import JobError
from dicomnode.node import Node
from dicomnode.routing.facts import SeriesFacts
from dicomnode.runner.host import build_registry
from dicomnode.runner.worker import Worker
from dicomnode.testing.synthetic import StudyInfo, write_ct_series
from tests.conftest import require_tool
from tests.support.net import storescu, wait_for
from tests.support.node import node_settings
from tests.support.phantoms import write_sphere_study

pytestmark = pytest.mark.integration

SPHERES = "tests.support.sphere_pipeline:SpherePipeline"


def _sphere_node(tmp_path: Path, database_url: str, orthanc=None, **kwargs) -> Settings:
    return node_settings(tmp_path, database_url, orthanc=orthanc, pipelines=["test_spheres"], extra=[SPHERES], **kwargs)


def _jobs(db: Database, kind: JobKind = JobKind.PIPELINE) -> list[Job]:
    with db.session() as s:
        jobs = list(s.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))
        for job in jobs:
            _ = job.outputs, job.deliveries, job.events
        return jobs


# ---------------------------------------------------------------------------------- 2. no feedback loop
def test_our_own_results_sent_back_never_start_a_pipeline(tmp_path: Path, orthanc) -> None:
    require_tool("storescu")
    files, _, _ = write_sphere_study(tmp_path / "ct")
    node = Node(_sphere_node(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", orthanc, forward=False))
    node.start()
    try:
        storescu(files, node.scp.port)
        wait_for(lambda: [j.state for j in _jobs(node.db)] == [JobState.DONE], 120, "the first job")
        (job,) = _jobs(node.db)
        ours = [node.settings.resolve(o.path) for o in job.outputs]
        # A PACS that routes every new object to every AI node sends our SR, SEG and summary back.
        storescu(ours, node.scp.port, calling="PACS")
        wait_for(lambda: _complete_series(node.db) == 4, 60, "our objects to be received and completed")
        assert len(_jobs(node.db)) == 1  # nothing analysed them
    finally:
        node.stop()


def _complete_series(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Series).where(Series.version > 0)) or 0)


# ---------------------------------------------------------------------------------- 3. one bad destination
def test_a_destination_removed_from_the_config_fails_only_its_own_deliveries(tmp_path: Path, orthanc) -> None:
    settings = _sphere_node(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", orthanc)
    db = Database(settings.database_url)
    db.upgrade()
    path = write_ct_series(np.zeros((1, 8, 8)), tmp_path / "one")[0]
    uid = str(pydicom.dcmread(path).SOPInstanceUID)
    with db.session() as s:
        repo.record_instance(s, _record(uid, str(path)))
        series = s.scalars(select(Series)).one()
        job = repo.enqueue_job(
            s, kind=JobKind.FORWARD, pipeline="x", pipeline_version="", dedup_key="f", study_id=series.study_id,
            series_id=series.id, series_version=1, rule="forward", max_attempts=3, state=JobState.DELIVERING,
        )  # fmt: skip
        assert job is not None
        repo.add_deliveries(s, job, "RENAMED_PACS", [(uid, str(path))])  # configured yesterday, gone today
        repo.add_deliveries(s, job, "ORTHANC", [(uid, str(path))])
    Dispatcher(settings, db).run_once()
    with db.session() as s:
        states = {d.destination: (d.state, d.error) for d in s.scalars(select(Delivery))}
    assert states["ORTHANC"][0] is DeliveryState.DONE
    assert states["RENAMED_PACS"][0] is DeliveryState.FAILED
    assert "no longer configured" in (states["RENAMED_PACS"][1] or "")
    assert uid in orthanc.sop_instance_uids()


def _record(sop_uid: str, path: str, series_uid: str = "1.2.3.4.5", association: str = "a1") -> repo.InstanceRecord:
    return repo.InstanceRecord(
        sop_instance_uid=sop_uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.2", series_instance_uid=series_uid,
        study_instance_uid="1.2.3.4", transfer_syntax_uid="1.2.840.10008.1.2.1", path=path, size=1,
        calling_ae="MOD", called_ae="NODE", association_id=association, patient_id="P", study_date="20260101",
        study_description="", accession_number="", modality="CT", series_description="", body_part="CHEST",
        facts=SeriesFacts(
            modality="CT", body_part="CHEST", body_part_source="BodyPartExamined",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2", image_type=(), series_description="", study_description="",
            calling_ae="MOD", called_ae="NODE", instance_count=1, slice_thickness_mm=None,
            series_instance_uid=series_uid, study_instance_uid="1.2.3.4",
        ).to_dict(),
    )  # fmt: skip


# ---------------------------------------------------------------------------------- 4. exact counts
def test_parallel_senders_into_one_series_are_counted_exactly(tmp_path: Path, database_url: str) -> None:
    require_tool("storescu")
    info = StudyInfo()
    series_uid = pydicom.uid.generate_uid()
    files = write_ct_series(np.zeros((160, 8, 8)), tmp_path / "ct", info=info, series_instance_uid=series_uid)
    settings = _sphere_node(tmp_path, database_url, worker={"processes": 0})
    node = Node(settings)
    node.start()
    try:
        senders = [threading.Thread(target=storescu, args=(files[k::4], node.scp.port)) for k in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        with node.db.session() as s:
            series = s.scalars(select(Series)).one()
            rows = s.scalar(select(func.count()).select_from(Instance)) or 0
    finally:
        node.stop()
    assert rows == len(files) == series.instance_count == series.frame_count


# ---------------------------------------------------------------------------------- 5. every worker's limits
def test_a_standalone_worker_kills_a_hung_job_at_the_timeout(tmp_path: Path, database_url: str) -> None:
    require_tool("storescu")
    files, _, _ = write_sphere_study(tmp_path / "ct", shape=(4, 16, 16))
    params = {"test_spheres": {"sleep_seconds": 120}}
    settings = _sphere_node(tmp_path, database_url, worker={"processes": 0}, params=params)
    node = Node(settings)  # receives and routes; no workers of its own
    node.start()
    config = tmp_path / "worker.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "node"}"\n[database]\nurl = "{database_url}"\n'
        f"[worker]\njob_timeout_seconds = 4\nretry_base_seconds = 60\npoll_seconds = 0.2\n"
        f'[pipelines]\nenabled = ["test_spheres"]\nextra = ["{SPHERES}"]\n'
        f"[pipelines.params.test_spheres]\nsleep_seconds = 120\n",
        encoding="utf-8",
    )
    worker = subprocess.Popen(["python", "-m", "dicomnode", "worker", "--config", str(config)], cwd=Path.cwd())
    try:
        storescu(files, node.scp.port)
        wait_for(lambda: "timed out" in (_jobs(node.db)[0].error or "") if _jobs(node.db) else False, 90, "timeout")
        (job,) = _jobs(node.db)
        assert job.state is JobState.PENDING and job.attempts == 1  # killed, retried later, not hung forever
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        node.stop()


def test_a_job_no_live_worker_can_run_waits_and_says_why(tmp_path: Path, database_url: str) -> None:
    from dicomnode.db.queries import waiting_reason

    settings = _sphere_node(tmp_path, database_url, worker={"processes": 0})
    db = Database(settings.database_url)
    db.upgrade()
    with db.session() as s:
        repo.record_instance(s, _record("1.2.3.4.5.1", "x.dcm"))
        series = s.scalars(select(Series)).one()
        job = repo.enqueue_job(
            s, kind=JobKind.PIPELINE, pipeline="needs_gpu", pipeline_version="1", dedup_key="g",
            study_id=series.study_id, series_id=series.id, series_version=1, rule="r", max_attempts=3,
        )  # fmt: skip
        repo.heartbeat(s, "cpuhost:1", ["test_spheres"])
    worker = Worker(settings, db, build_registry(settings), owner="cpuhost:1")
    assert worker.run_once() is False  # it claims only what it can run
    with db.session() as s:
        job = s.get(Job, job.id)
        assert job is not None and job.state is JobState.PENDING
        assert (
            waiting_reason(s, job) == "no live worker can run needs_gpu (unavailable or disabled on every worker host)"
        )


# ---------------------------------------------------------------------------------- 6. only the lease owner
def test_a_worker_that_lost_its_lease_changes_nothing(tmp_path: Path, database_url: str) -> None:
    settings = _sphere_node(tmp_path, database_url, worker={"processes": 0})
    db = Database(settings.database_url)
    db.upgrade()
    with db.session() as s:
        repo.record_instance(s, _record("1.2.3.4.5.1", "x.dcm"))
        series = s.scalars(select(Series)).one()
        repo.enqueue_job(
            s, kind=JobKind.PIPELINE, pipeline="test_spheres", pipeline_version="1", dedup_key="k",
            study_id=series.study_id, series_id=series.id, series_version=1, rule="r", max_attempts=3,
        )  # fmt: skip
    registry = build_registry(settings)
    slow, fast = Worker(settings, db, registry, owner="slow:1"), Worker(settings, db, registry, owner="fast:2")
    now = utcnow()
    with db.session() as s:
        job = repo.claim_job(s, owner="slow:1", lease_seconds=1, is_postgres=db.is_postgres, pipelines=["test_spheres"])
        assert job is not None
        job_id = job.id
    later = now + dt.timedelta(seconds=5)
    with db.session() as s:  # slow's lease ran out; fast takes the job over
        taken = repo.claim_job(
            s, owner="fast:2", lease_seconds=60, is_postgres=db.is_postgres, pipelines=["test_spheres"], now=later
        )
        assert taken is not None and taken.attempts == 2
    slow._fail(job_id, 1, "slow worker's stale failure", retryable=False)
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state is JobState.RUNNING and job.lease_owner == "fast:2" and job.error is None
    assert fast._owned(job, 2) and not slow._owned(job, 1)


# ---------------------------------------------------------------------------------- 7. snapshots
def test_a_job_loads_exactly_the_version_it_was_made_for(tmp_path: Path, database_url: str) -> None:
    settings = _sphere_node(tmp_path, database_url, worker={"processes": 0})
    db = Database(settings.database_url)
    db.upgrade()
    paths = write_ct_series(np.zeros((4, 8, 8)), tmp_path / "node" / "store" / "s", series_instance_uid="1.2.3.4.5")
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in paths]
    with db.session() as s:
        for uid, path in zip(uids[:3], paths[:3]):
            repo.record_instance(s, _record(uid, settings.stored_path(path)))
    with db.session() as s:
        series_id = s.scalars(select(Series.id)).one()
        done = repo.complete_if_due(
            s, series_id, quiet_seconds=0, association_end=False, association_grace_seconds=0,
            is_postgres=db.is_postgres, now=utcnow() + dt.timedelta(seconds=1),
        )  # fmt: skip
        assert done is not None and done.version == 1
    with db.session() as s:  # the late image arrives before version 1's job runs
        repo.record_instance(s, _record(uids[3], settings.stored_path(paths[3])))
        job = Job(
            kind=JobKind.PIPELINE, pipeline="test_spheres", dedup_key="v1", study_id=1, series_id=series_id,
            series_version=1, result_version=1,
        )  # fmt: skip
        s.add(job)
        s.flush()
        s.expunge(job)
    series, _ = Worker(settings, db, build_registry(settings))._load_inputs(job)
    assert sorted(str(d.SOPInstanceUID) for d in series[0].datasets) == sorted(uids[:3])


def test_parallel_senders_complete_a_series_only_when_the_last_one_closes(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()
    with db.session() as s:
        for name in ("left", "right"):
            repo.association_started(s, name, "MOD", "NODE")
        repo.record_instance(s, _record("1.2.3.4.5.1", "a.dcm", association="left"))
        repo.record_instance(s, _record("1.2.3.4.5.2", "b.dcm", association="right"))
        repo.association_ended(s, "right")  # the first sender to close was the last to store
    kwargs = {"quiet_seconds": 60, "association_end": True, "association_grace_seconds": 0.0}
    with db.session() as s:
        series_id = s.scalars(select(Series.id)).one()
        soon = utcnow() + dt.timedelta(seconds=1)
        assert repo.complete_if_due(s, series_id, is_postgres=db.is_postgres, now=soon, **kwargs) is None
    with db.session() as s:
        repo.association_ended(s, "left")
    with db.session() as s:
        later = utcnow() + dt.timedelta(seconds=1)
        done = repo.complete_if_due(s, series_id, is_postgres=db.is_postgres, now=later, **kwargs)
        assert done is not None and done.version == 1


# ---------------------------------------------------------------------------------- 8, 15. retry
def test_retry_of_a_failed_forward_sends_again(tmp_path: Path, orthanc) -> None:
    settings = _sphere_node(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", orthanc)
    db = Database(settings.database_url)
    db.upgrade()
    path = write_ct_series(np.zeros((1, 8, 8)), tmp_path / "one")[0]
    uid = str(pydicom.dcmread(path).SOPInstanceUID)
    with db.session() as s:
        repo.record_instance(s, _record(uid, str(path)))
        series = s.scalars(select(Series)).one()
        job = repo.enqueue_job(
            s, kind=JobKind.FORWARD, pipeline="ORTHANC", pipeline_version="", dedup_key="f",
            study_id=series.study_id, series_id=series.id, series_version=1, rule="forward", max_attempts=3,
            state=JobState.FAILED,
        )  # fmt: skip
        assert job is not None
        repo.add_deliveries(s, job, "ORTHANC", [(uid, str(path))])
        s.scalars(select(Delivery)).one().state = DeliveryState.FAILED
        job_id = job.id
    with db.session() as s:
        assert retry_job(s, job_id) == "1 deliveries re-queued"
    dispatcher = Dispatcher(settings, db)
    wait_for(lambda: dispatcher.run_once() == 0 and _jobs(db, JobKind.FORWARD)[0].state is JobState.DONE, 30, "retry")
    assert uid in orthanc.sop_instance_uids()


def test_retry_of_a_done_analysis_is_refused_unless_rerun_gives_a_new_version(tmp_path: Path, orthanc) -> None:
    require_tool("storescu")
    files, _, _ = write_sphere_study(tmp_path / "ct")
    node = Node(_sphere_node(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", orthanc, forward=False))
    node.start()
    try:
        storescu(files, node.scp.port)
        wait_for(lambda: [j.state for j in _jobs(node.db)] == [JobState.DONE], 120, "the job")
        first = _jobs(node.db)[0]
        with node.db.session() as s, pytest.raises(JobError, match="--rerun"):
            retry_job(s, first.id)
        with node.db.session() as s:
            assert "result version 2" in retry_job(s, first.id, rerun=True)
        wait_for(lambda: [j.state for j in _jobs(node.db)] == [JobState.DONE] * 2, 120, "the re-run")
        second = _jobs(node.db)[1]
    finally:
        node.stop()
    sr = pydicom.dcmread(node.settings.resolve(next(o.path for o in second.outputs if o.kind == "SR")))
    assert sr.SeriesDescription == "test_spheres SR v2" and int(sr.SeriesNumber) == 9010
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == next(o.sop_instance_uid for o in first.outputs if o.kind == "SR")


# ---------------------------------------------------------------------------------- 9. nothing sent twice
def test_two_dispatchers_never_claim_the_same_delivery(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()
    with db.session() as s:
        repo.record_instance(s, _record("1.2.3.4.5.1", "x.dcm"))
        series = s.scalars(select(Series)).one()
        job = repo.enqueue_job(
            s, kind=JobKind.FORWARD, pipeline="P", pipeline_version="", dedup_key="f", study_id=series.study_id,
            series_id=series.id, series_version=1, rule="forward", max_attempts=3, state=JobState.DELIVERING,
        )  # fmt: skip
        assert job is not None
        repo.add_deliveries(s, job, "P", [(f"1.2.9.{i}", f"{i}.dcm") for i in range(60)])
    claimed: list[int] = []
    lock = threading.Lock()

    def dispatcher(name: str) -> None:
        while True:
            with db.session() as s:
                batch = repo.claim_deliveries(s, owner=name, lease_seconds=60, limit=7, is_postgres=db.is_postgres)
            if not batch:
                return
            with lock:
                claimed.extend(d.id for d in batch)

    threads = [threading.Thread(target=dispatcher, args=(f"d{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == len(set(claimed)) == 60


def test_a_reopened_series_queues_only_what_is_not_queued_yet(tmp_path: Path) -> None:
    settings = _sphere_node(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", worker={"processes": 0})
    settings = Settings.model_validate(
        {**settings.model_dump(mode="json"), "destinations": [{"name": "DOWN", "ae_title": "DOWN", "host": "127.0.0.1",
                                                               "port": 9, "results": False, "forward": True}]}
    )  # fmt: skip
    db = Database(settings.database_url)
    db.upgrade()
    soon = utcnow() + dt.timedelta(seconds=30)

    def receive_and_complete(uids: list[str]) -> None:
        with db.session() as s:
            for uid in uids:
                repo.record_instance(s, _record(uid, f"{uid}.dcm"))
            series_id = s.scalars(select(Series.id)).one()
        with db.session() as s:
            done = repo.complete_if_due(
                s, series_id, quiet_seconds=1, association_end=False, association_grace_seconds=0,
                is_postgres=db.is_postgres, now=soon,
            )  # fmt: skip
            assert done is not None
            from dicomnode.assembly import route_series

            route_series(s, settings, {}, done)

    receive_and_complete(["1.2.9.1", "1.2.9.2"])  # the destination is down: both stay PENDING
    receive_and_complete(["1.2.9.3"])  # a late image re-opens the series
    with db.session() as s:
        queued = sorted(s.scalars(select(Delivery.sop_instance_uid)))
    assert queued == ["1.2.9.1", "1.2.9.2", "1.2.9.3"]  # the pending two were not queued again


# ---------------------------------------------------------------------------------- 10. short transactions
def test_a_series_whose_routing_fails_does_not_block_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dicomnode.assembly as assembly

    settings = _sphere_node(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", worker={"processes": 0})
    db = Database(settings.database_url)
    db.upgrade()
    with db.session() as s:
        for k in range(3):
            repo.record_instance(s, _record(f"1.2.8.{k}.1", "x.dcm", series_uid=f"1.2.8.{k}"))
        bad = s.scalars(select(Series.id).where(Series.series_instance_uid == "1.2.8.1")).one()
        s.execute(Series.__table__.update().values(last_received_at=utcnow() - dt.timedelta(seconds=60)))
    original = assembly.route_series

    def route(session, settings, pipelines, done):  # type: ignore[no-untyped-def]
        if done.series_id == bad:
            raise RuntimeError("a rule exploded")
        return original(session, settings, pipelines, done)

    monkeypatch.setattr(assembly, "route_series", route)
    completed = assemble_once(db, settings, {})
    assert sorted(c.series_id for c in completed) == sorted({1, 2, 3} - {bad})
    with db.session() as s:
        failed = s.get(Series, bad)
        assert failed is not None and failed.version == 0 and "a rule exploded" in (failed.last_error or "")


# ---------------------------------------------------------------------------------- 11. paths
def test_a_restart_from_another_directory_finds_every_file(
    tmp_path: Path, orthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("storescu")
    files, _, _ = write_sphere_study(tmp_path / "ct")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
    monkeypatch.chdir(tmp_path / "a")
    receiving = _sphere_node(tmp_path, url, orthanc, forward=False, worker={"processes": 0})
    receiving = Settings.model_validate(
        {**receiving.model_dump(mode="json"), "node": {**receiving.node.model_dump(mode="json"), "data_dir": "data"}}
    )  # the default: a data dir relative to the working directory
    node = Node(receiving)
    node.start()
    try:
        storescu(files, node.scp.port)
        wait_for(lambda: len(_jobs(node.db)) == 1, 60, "the job to be queued")
    finally:
        node.stop()
    with node.db.session() as s:
        assert all(p.startswith("store/") for p in s.scalars(select(Instance.path)))
    monkeypatch.chdir(tmp_path / "b")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # the test pipeline's package
    moved = Settings.model_validate(
        {**receiving.model_dump(mode="json"), "node": {**receiving.node.model_dump(mode="json"),
                                                       "data_dir": str(tmp_path / "a" / "data")},
         "worker": {**receiving.worker.model_dump(mode="json"), "processes": 1}}
    )  # fmt: skip
    node = Node(moved)
    node.start()
    try:
        wait_for(lambda: _jobs(node.db)[0].state in (JobState.DONE, JobState.FAILED), 120, "the job")
        assert _jobs(node.db)[0].state is JobState.DONE, _jobs(node.db)[0].error
    finally:
        node.stop()


# ---------------------------------------------------------------------------------- 14. secrets
def test_the_database_password_is_never_written_to_disk(tmp_path: Path, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite URLs carry no password")
    from sqlalchemy.engine import make_url

    with_password = make_url(database_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    node = Node(_sphere_node(tmp_path, with_password))  # trust auth accepts any password
    node.start()
    try:
        wait_for(lambda: node.settings.node.data_dir.joinpath("run", "settings.json").is_file(), 10, "settings")
    finally:
        node.stop()
    written = b"".join(p.read_bytes() for p in node.settings.node.data_dir.rglob("*") if p.is_file())
    assert b"s3cret-pw" not in written


# ---------------------------------------------------------------------------------- 16. duplicates
@pytest.mark.parametrize("policy", ["keep_first", "replace"])
def test_a_duplicate_follows_the_stated_policy(tmp_path: Path, policy: str) -> None:
    require_tool("storescu")
    original = write_ct_series(np.zeros((2, 8, 8)), tmp_path / "first")
    second = tmp_path / "second.dcm"
    ds = pydicom.dcmread(original[0])
    ds.PixelData = (np.ones((8, 8), dtype=np.int16) * 7).tobytes()  # same UID, other pixels
    ds.save_as(second, enforce_file_format=True)
    settings = _sphere_node(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", worker={"processes": 0})
    settings = Settings.model_validate(
        {**settings.model_dump(mode="json"), "node": {**settings.node.model_dump(mode="json"), "duplicates": policy}}
    )
    node = Node(settings)
    node.start()
    try:
        storescu(original, node.scp.port)
        wait_for(lambda: _complete_series(node.db) == 1, 30, "completion")
        storescu([second], node.scp.port)
        with node.db.session() as s:
            instance = s.scalars(select(Instance).where(Instance.sop_instance_uid == ds.SOPInstanceUID)).one()
            stored = pydicom.dcmread(node.settings.resolve(instance.path)).pixel_array
            series = s.scalars(select(Series)).one()
    finally:
        node.stop()
    assert instance.received_count == 2
    if policy == "keep_first":
        assert (stored == 0).all() and series.state.value == "COMPLETE"
    else:
        assert (stored == 7).all() and series.state.value == "RECEIVING"  # re-opened: a new version follows
