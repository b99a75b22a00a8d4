"""Retention on real rows and files (SQLite and Postgres): by age, by free-space watermark, never what an open
job, a prior of its patient, a receiving series or an unfinished delivery still needs; a dry run deletes
nothing; each deletion is an event."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dicomnode.config import Settings
from dicomnode.db.engine import Database
from dicomnode.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobEvent,
    JobKind,
    JobState,
    Output,
    RetentionEvent,
    Series,
    SeriesState,
    Study,
    utcnow,
)
from dicomnode.retention import run_retention
from tests.support.cli import run_cli

pytestmark = pytest.mark.integration

NOW = utcnow()


@dataclass
class World:
    settings: Settings
    db: Database
    series: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[Path]] = field(default_factory=dict)


def _settings(tmp_path: Path, url: str, **retention: float) -> Settings:
    return Settings.model_validate(
        {"node": {"data_dir": str(tmp_path / "data")}, "database": {"url": url}, "retention": retention}
    )


def _write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


def build_world(settings: Settings) -> World:
    """Six studies, each a case: A old and done; B old with a pending job; C an older study of B's patient;
    D old with a delivery still pending; E still receiving; F recent."""
    db = Database(settings.database_url)
    db.upgrade()
    world = World(settings, db)
    cases = {  # name: (patient, days old, series state, job state or None)
        "A": ("PA", 40, SeriesState.COMPLETE, JobState.DONE),
        "B": ("PB", 40, SeriesState.COMPLETE, JobState.PENDING),
        "C": ("PB", 400, SeriesState.COMPLETE, JobState.DONE),
        "D": ("PD", 40, SeriesState.COMPLETE, JobState.FAILED),
        "E": ("PE", 40, SeriesState.RECEIVING, None),
        "F": ("PF", 1, SeriesState.COMPLETE, JobState.DONE),
    }
    data = settings.node.data_dir
    with db.session() as session:
        for name, (patient, days, state, job_state) in cases.items():
            at = NOW - dt.timedelta(days=days)
            study = Study(study_instance_uid=f"1.2.3.{name}", patient_id=patient, created_at=at)
            session.add(study)
            session.flush()
            series = Series(
                series_instance_uid=f"1.2.3.{name}.1", study_id=study.id, state=state, version=1, last_received_at=at
            )
            session.add(series)
            session.flush()
            world.series[name] = series.id
            world.files[name] = []
            for index in range(3):
                path = _write(data / "store" / name / f"{index}.dcm", 1000)
                world.files[name].append(path)
                session.add(
                    Instance(
                        sop_instance_uid=f"1.2.3.{name}.1.{index}",
                        series_id=series.id,
                        path=settings.stored_path(path),
                        size=1000,
                        received_at=at,
                        version=1,
                    )
                )
            if job_state is None:
                continue
            job = Job(
                kind=JobKind.PIPELINE,
                pipeline="test_spheres",
                dedup_key=f"job-{name}",
                study_id=study.id,
                series_id=series.id,
                state=job_state,
                finished_at=None if job_state is JobState.PENDING else at,
            )
            session.add(job)
            session.flush()
            world.jobs[name] = job.id
            if job_state is JobState.PENDING:
                continue
            sr = _write(data / "outputs" / f"job-{job.id}" / "sr.dcm", 500)
            result = _write(data / "outputs" / f"job-{job.id}" / "result.json", 100)
            world.files[f"{name}-results"] = [sr, result]
            job.result_path = settings.stored_path(result)
            session.add(
                Output(
                    job_id=job.id,
                    kind="SR",
                    sop_instance_uid=f"1.2.3.{name}.9",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
                    series_instance_uid=f"1.2.3.{name}.9.1",
                    path=settings.stored_path(sr),
                )
            )
            if name == "D":  # a forward of D's first image that has not gone out yet
                session.add(
                    Delivery(
                        job_id=job.id,
                        destination="PACS",
                        sop_instance_uid="1.2.3.D.1.0",
                        path=settings.stored_path(world.files["D"][0]),
                        state=DeliveryState.PENDING,
                    )
                )
                session.add(
                    Delivery(
                        job_id=job.id,
                        destination="PACS",
                        sop_instance_uid="1.2.3.D.9",
                        path=settings.stored_path(sr),
                        state=DeliveryState.PENDING,
                    )
                )
    return world


def _exists(world: World, name: str) -> list[bool]:
    return [p.exists() for p in world.files[name]]


def _instances(world: World, name: str) -> int:
    with world.db.session() as session:
        return (
            session.scalar(select(func.count()).select_from(Instance).where(Instance.series_id == world.series[name]))
            or 0
        )


def test_age_limits_delete_only_what_nothing_needs(tmp_path: Path, database_url: str) -> None:
    settings = _settings(tmp_path, database_url, instances_max_age_days=30, results_max_age_days=30)
    world = build_world(settings)
    try:
        planned = run_retention(world.db, settings, dry_run=True)
        assert {(c.kind, c.series_id) for c in planned} == {
            ("instances", world.series["A"]),
            ("results", world.series["A"]),
        }
        assert all(all(_exists(world, name)) for name in world.files)  # a dry run deletes nothing
        with world.db.session() as session:
            assert session.scalar(select(func.count()).select_from(RetentionEvent)) == 0

        done = run_retention(world.db, settings)
        assert [(c.kind, c.reason) for c in done] == [("instances", "age"), ("results", "age")]
        assert _exists(world, "A") == [False] * 3 and _exists(world, "A-results") == [False, False]
        assert not (settings.node.data_dir / "store" / "A").exists()  # emptied folders go too
        assert _instances(world, "A") == 0
        for kept in ("B", "C", "C-results", "D", "D-results", "E", "F", "F-results"):
            assert all(_exists(world, kept)), kept
        for kept in ("B", "C", "D", "E", "F"):
            assert _instances(world, kept) == 3, kept
        with world.db.session() as session:
            events = session.scalars(select(RetentionEvent).order_by(RetentionEvent.id)).all()
            assert [(e.kind, e.reason, e.series_id, e.files, e.bytes) for e in events] == [
                ("instances", "age", world.series["A"], 3, 3000),
                ("results", "age", world.series["A"], 2, 600),
            ]
            job = session.get(Job, world.jobs["A"])
            assert job is not None and job.result_path is None
            assert session.scalar(select(func.count()).select_from(Output).where(Output.job_id == job.id)) == 0
            actions = session.scalars(select(JobEvent.action).where(JobEvent.job_id == job.id)).all()
            assert "retention_deleted" in actions
        assert run_retention(world.db, settings) == []  # nothing left to do
    finally:
        world.db.dispose()


def test_watermark_deletes_oldest_first_and_still_spares_what_is_needed(tmp_path: Path, database_url: str) -> None:
    # A watermark no disk can reach: everything deletable goes, oldest first; the recent study F too.
    settings = _settings(tmp_path, database_url, min_free_gb=10**9)
    world = build_world(settings)
    try:
        done = run_retention(world.db, settings)
        assert all(c.reason == "free_space" for c in done)
        assert [c.at for c in done] == sorted(c.at for c in done)
        assert {(c.kind, c.series_id) for c in done} == {
            (kind, world.series[name]) for name in ("A", "F") for kind in ("instances", "results")
        }
        assert not any(_exists(world, "F")) and not any(_exists(world, "F-results"))
        for kept in ("B", "C", "C-results", "D", "D-results", "E"):
            assert all(_exists(world, kept)), kept
    finally:
        world.db.dispose()


def test_retention_command_dry_run(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "", instances_max_age_days=30)
    world = build_world(settings)
    world.db.dispose()
    config = tmp_path / "dicomnode.toml"
    config.write_text(f'[node]\ndata_dir = "{settings.node.data_dir}"\n[retention]\ninstances_max_age_days = 30\n')
    result = run_cli("retention", "--dry-run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("would delete instances") and f"series {world.series['A']}" in lines[0]
    assert lines[-1] == "retention: 1 item(s), would free 0.0 MB"
    assert all(_exists(world, "A"))
    result = run_cli("retention", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("deleted instances")
    assert not any(_exists(world, "A"))
    status = run_cli("status", "--config", str(config), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    disk = status.stdout.split("disk:\n", 1)[1]
    assert disk.strip().startswith(f"{settings.node.data_dir.resolve()}:") and "GB free of" in disk
    assert "destinations:\n  none configured" in status.stdout


def test_serve_runs_retention_periodically(tmp_path: Path) -> None:
    from dicomnode.node import Node
    from tests.support.net import wait_for

    base = _settings(tmp_path, "", instances_max_age_days=30, interval_seconds=0.3)
    world = build_world(base)
    world.db.dispose()
    settings = Settings.model_validate(
        {
            **base.model_dump(mode="json"),
            "node": {**base.node.model_dump(mode="json"), "port": 0},
            "worker": {"processes": 0},
        }
    )
    node = Node(settings)
    node.start()
    try:
        wait_for(lambda: not any(_exists(world, "A")), 20, "the served node's retention pass")
    finally:
        node.stop()
    assert all(_exists(world, "B")) and all(_exists(world, "F"))
