"""The job and series bookkeeping on real databases: SQLite and the Postgres server (skipped if absent)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.config import CompletionSettings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import (
    CompletionReason,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobKind,
    JobState,
    Series,
    SeriesCompletion,
    SeriesState,
    utcnow,
)
from dicomnode.ingest import DatabaseSink
from dicomnode.scp.handlers import ReceivedInstance
from dicomnode.testing.synthetic import write_ct_series


@pytest.fixture
def db(database_url: str):
    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()


def _record(series_uid: str, sop_uid: str, association: str = "a1", study_uid: str = "1.2.3") -> repo.InstanceRecord:
    return repo.InstanceRecord(
        sop_instance_uid=sop_uid,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series_instance_uid=series_uid,
        study_instance_uid=study_uid,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        path=f"/store/{sop_uid}.dcm",
        size=100,
        calling_ae="MOD",
        called_ae="NODE",
        association_id=association,
        patient_id="P1",
        study_date="20260101",
        study_description="",
        accession_number="",
        modality="CT",
        series_description="",
        body_part="CHEST",
        facts={},
    )


def _complete(
    db: Database, now: dt.datetime, quiet: float = 10.0, grace: float = 2.0, several: float | None = None
) -> list[repo.Completed]:
    done = []
    with db.session() as session:
        candidates = repo.receiving_series_ids(session)
    for series_id in candidates:
        with db.session() as session:
            completed = repo.complete_if_due(
                session,
                series_id,
                quiet_seconds=quiet,
                association_end=True,
                association_grace_seconds=grace,
                several_associations_grace_seconds=several,
                is_postgres=db.is_postgres,
                now=now,
            )
            if completed:
                done.append(completed)
    return done


def test_duplicate_instance_is_counted_once(db: Database) -> None:
    with db.session() as s:
        _, first = repo.record_instance(s, _record("1.2.3.4", "1.2.3.4.1"))
    with db.session() as s:
        instance, again = repo.record_instance(s, _record("1.2.3.4", "1.2.3.4.1"))
        series = s.get(Series, instance.series_id)
        assert first and not again
        assert instance.received_count == 2
        assert series is not None and series.instance_count == 1


def test_completion_by_quiet_period_and_by_association_end(db: Database) -> None:
    with db.session() as s:
        repo.association_started(s, "quiet", "MOD", "NODE")
        repo.record_instance(s, _record("1.2.3.10", "1.2.3.10.1", "quiet"))
        repo.association_started(s, "ended", "MOD", "NODE")
        repo.record_instance(s, _record("1.2.3.11", "1.2.3.11.1", "ended"))
        repo.association_ended(s, "ended")
    now = utcnow()
    assert _complete(db, now) == []  # nothing quiet yet, association end still within its grace period
    later = _complete(db, now + dt.timedelta(seconds=3))
    assert [c.reason for c in later] == [CompletionReason.ASSOCIATION_END]
    latest = _complete(db, now + dt.timedelta(seconds=11))
    assert [c.reason for c in latest] == [CompletionReason.QUIET_PERIOD]
    with db.session() as s:
        rows = s.query(SeriesCompletion).order_by(SeriesCompletion.id).all()
        assert [(r.reason, r.version, r.instance_count) for r in rows] == [
            (CompletionReason.ASSOCIATION_END, 1, 1),
            (CompletionReason.QUIET_PERIOD, 1, 1),
        ]


def test_a_closed_association_completes_its_series_within_a_second_per_image_associations_wait(
    db: Database,
) -> None:
    # With the defaults a user gets: a modality that sends the series over one association and closes it
    # gets its results started within a second; one that opens an association per image (series 2) is
    # not completed between two of its associations.
    defaults = CompletionSettings()
    with db.session() as s:
        repo.association_started(s, "whole", "MOD", "NODE")
        for n in (1, 2):
            repo.record_instance(s, _record("1.2.3.30", f"1.2.3.30.{n}", "whole"))
        repo.association_ended(s, "whole")
        for n in (1, 2):
            repo.association_started(s, f"image{n}", "MOD", "NODE")
            repo.record_instance(s, _record("1.2.3.31", f"1.2.3.31.{n}", f"image{n}"))
            repo.association_ended(s, f"image{n}")
    now = utcnow()

    def completed_at(seconds: float) -> list[str]:
        at = now + dt.timedelta(seconds=seconds)
        grace, several = defaults.association_end_grace_seconds, defaults.several_associations_grace_seconds
        done = _complete(db, at, quiet=defaults.series_quiet_seconds, grace=grace, several=several)
        with db.session() as session:
            return [str(session.get(Series, c.series_id).series_instance_uid) for c in done]

    assert completed_at(defaults.association_end_grace_seconds + 0.1) == ["1.2.3.30"]
    assert completed_at(1.0) == []
    assert completed_at(defaults.several_associations_grace_seconds + 0.1) == ["1.2.3.31"]


def test_late_instance_reopens_series_as_a_new_version(db: Database) -> None:
    with db.session() as s:
        repo.record_instance(s, _record("1.2.3.20", "1.2.3.20.1"))
    first = _complete(db, utcnow() + dt.timedelta(seconds=11))
    with db.session() as s:
        repo.record_instance(s, _record("1.2.3.20", "1.2.3.20.2"))
        series = s.query(Series).one()
        assert series.state is SeriesState.RECEIVING
    second = _complete(db, utcnow() + dt.timedelta(seconds=11))
    assert [c.version for c in first] == [1] and [c.version for c in second] == [2]


def test_ids_kept_by_an_association_count_instances_and_reopen_the_series(db: Database) -> None:
    with db.session() as s:
        first, ids = repo.record_received(s, _record("1.2.3.21", "1.2.3.21.1"))
    _complete(db, utcnow() + dt.timedelta(seconds=11))
    with db.session() as s:  # the same association's next instances, with the ids it kept
        new, again = repo.record_received(s, _record("1.2.3.21", "1.2.3.21.2"), known=ids)
        duplicate, _ = repo.record_received(s, _record("1.2.3.21", "1.2.3.21.2"), known=ids)
    with db.session() as s:
        series = s.query(Series).one()
        assert first and new and not duplicate and again == ids
        assert (series.instance_count, series.state, series.version) == (2, SeriesState.RECEIVING, 1)


def test_a_kept_id_whose_series_row_is_gone_is_refused_before_anything_is_written(db: Database) -> None:
    with db.session() as s:
        _, kept = repo.record_received(s, _record("1.2.3.22", "1.2.3.22.1"))
    with db.session() as s:  # retention removed the series while the association was open
        s.query(Instance).delete()
        s.query(Series).delete()
    with pytest.raises(repo.StaleSeriesIdsError), db.session() as s:
        repo.record_received(s, _record("1.2.3.22", "1.2.3.22.2"), known=kept)
    with db.session() as s:
        assert s.query(Instance).count() == 0


def test_the_sink_records_again_without_kept_ids_that_went_stale(db: Database, tmp_path: Path) -> None:
    paths = write_ct_series(np.zeros((2, 4, 4)), tmp_path / "ct", body_part="CHEST")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    sink = DatabaseSink(db)

    def receive(k: int) -> None:
        h = headers[k]
        uids = (str(h.SOPInstanceUID), str(h.SOPClassUID), str(h.SeriesInstanceUID), str(h.StudyInstanceUID))
        sink.instance_received(ReceivedInstance(*uids, "1.2.840.10008.1.2.1", paths[k], 10, "MOD", "NODE", "a", h))

    sink.association_started("a", "MOD", "NODE")
    receive(0)
    with db.session() as s:  # retention removed the series while the association was open
        s.query(Instance).delete()
        s.query(Series).delete()
    receive(1)
    with db.session() as s:
        series, instance = s.query(Series).one(), s.query(Instance).one()
        assert instance.series_id == series.id and series.instance_count == 1
        assert series.body_part == "CHEST" and series.facts  # described as a new series, not from the cache


def _enqueue(db: Database, key: str) -> int | None:
    with db.session() as s:
        if not s.query(Series).count():
            repo.record_instance(s, _record("1.2.3.30", "1.2.3.30.1"))
        series = s.query(Series).one()
        job = repo.enqueue_job(
            s,
            kind=JobKind.PIPELINE,
            pipeline="p",
            pipeline_version="1.0",
            dedup_key=key,
            study_id=series.study_id,
            series_id=series.id,
            series_version=1,
            rule="r",
            max_attempts=2,
        )
        return None if job is None else job.id


def test_dedup_key_prevents_duplicate_jobs(db: Database) -> None:
    assert _enqueue(db, "p:series:1.2.3.30:v1") is not None
    assert _enqueue(db, "p:series:1.2.3.30:v1") is None
    assert _enqueue(db, "p:series:1.2.3.30:v2") is not None


def test_concurrent_claims_never_hand_out_a_job_twice(db: Database) -> None:
    ids = {_enqueue(db, f"job-{i}") for i in range(12)}
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            with db.session() as s:
                job = repo.claim_job(s, owner=name, lease_seconds=60, is_postgres=db.is_postgres, pipelines=["p"])
                if job is None:
                    return
                with lock:
                    claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)  # every job once, none twice


def test_expired_lease_is_claimed_again_and_attempts_are_bounded(db: Database) -> None:
    """A worker that dies every time (segfault, OOM kill) never finishes its attempt: after max_attempts
    lease expiries the job is FAILED with that reason, not reclaimed forever."""
    job_id = _enqueue(db, "lease")  # max_attempts = 2
    now = utcnow()
    with db.session() as s:
        assert repo.claim_job(s, owner="dead1", lease_seconds=5, is_postgres=db.is_postgres, pipelines=["p"], now=now)
    with db.session() as s:  # lease still valid: nobody takes it over
        assert (
            repo.claim_job(s, owner="x", lease_seconds=5, is_postgres=db.is_postgres, pipelines=["p"], now=now) is None
        )
    later = now + dt.timedelta(seconds=6)
    with db.session() as s:
        job = repo.claim_job(s, owner="dead2", lease_seconds=5, is_postgres=db.is_postgres, pipelines=["p"], now=later)
        assert job is not None and job.id == job_id and job.attempts == 2 and job.lease_owner == "dead2"
    much_later = later + dt.timedelta(seconds=6)
    with db.session() as s:  # the second worker died too: no third claim
        assert (
            repo.claim_job(s, owner="w3", lease_seconds=5, is_postgres=db.is_postgres, pipelines=["p"], now=much_later)
            is None
        )
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state is JobState.FAILED and job.lease_owner is None
        assert job.error is not None and job.error.startswith("worker died 2 times")
        assert [e.action for e in job.events][-3:] == ["claimed", "reclaimed", "failed"]


def test_retryable_failure_is_rescheduled_with_backoff(db: Database) -> None:
    _enqueue(db, "retry")
    with db.session() as s:
        job = repo.claim_job(s, owner="w", lease_seconds=5, is_postgres=db.is_postgres, pipelines=["p"])
        assert job is not None
        repo.fail_attempt(s, job, "temporary", retry_base_seconds=30, retryable=True)
        assert job.state is JobState.PENDING and job.run_after > utcnow() + dt.timedelta(seconds=25)
    with db.session() as s:
        assert repo.claim_job(s, owner="w", lease_seconds=5, is_postgres=db.is_postgres, pipelines=["p"]) is None


def test_job_is_done_only_when_every_delivery_is_accepted(db: Database) -> None:
    job_id = _enqueue(db, "deliver")
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.state = JobState.DELIVERING
        repo.add_deliveries(s, job, "PACS", [(f"1.2.9.{i}", f"/out/{i}.dcm") for i in range(3)])
        assert repo.add_deliveries(s, job, "PACS", [("1.2.9.0", "/out/0.dcm")]) == 0
    with db.session() as s:
        assert repo.settle_delivering_jobs(s) == []
        for d in s.query(Delivery).all():
            d.state = DeliveryState.DONE
    with db.session() as s:
        [job] = repo.settle_delivering_jobs(s)
        assert job.state is JobState.DONE


def test_migrations_are_idempotent(database_url: str) -> None:
    database = Database(database_url)
    database.upgrade()
    database.upgrade()
    with database.session() as s:
        assert s.query(Job).count() == 0
    database.dispose()


def test_sqlite_and_postgres_urls_are_distinguished(database_url: str) -> None:
    database = Database(database_url)
    assert database.is_postgres == database_url.startswith("postgresql")
    database.dispose()
