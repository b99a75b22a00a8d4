"""Building blocks of the delivery tests: settings with destinations, CT files, a DELIVERING job with its
deliveries queued, and reading back what became of them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from sqlalchemy import select

from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import Delivery, Job, JobKind, JobState, Study
from dicomnode.testing.synthetic import StudyInfo, write_ct_series
from tests.support.node import node_settings


def delivery_settings(
    tmp_path: Path, database_url: str, destinations: list[dict[str, Any]], **dispatch: Any
) -> Settings:
    base = node_settings(tmp_path, database_url, worker={"processes": 0}, dispatch=dispatch)
    return Settings.model_validate({**base.model_dump(mode="json"), "destinations": destinations})


def destination(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "ae_title": name, "host": "127.0.0.1", "port": port, **extra}


def ct_files(tmp_path: Path, slices: int, seed: int = 3) -> list[Path]:
    hu = np.random.default_rng(seed).integers(-1000, 1500, size=(slices, 16, 16))
    return write_ct_series(hu, tmp_path / f"ct{seed}", info=StudyInfo(patient_id="LANES"))


def queue_deliveries(db: Database, destinations: Sequence[str], paths: Sequence[Path], key: str = "job") -> int:
    """A DELIVERING job with one delivery of each file to each destination (in the order given)."""
    items = [(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID), str(p)) for p in paths]
    with db.session() as s:
        study = Study(study_instance_uid=f"1.2.826.0.1.{abs(hash(key)) % 10**8}")
        s.add(study)
        s.flush()
        job = repo.enqueue_job(
            s, kind=JobKind.FORWARD, pipeline=",".join(destinations), pipeline_version="", dedup_key=key,
            study_id=study.id, series_id=None, series_version=1, rule="forward", max_attempts=3,
            state=JobState.DELIVERING,
        )  # fmt: skip
        assert job is not None
        for name in destinations:
            repo.add_deliveries(s, job, name, items)
        return job.id


def deliveries_to(db: Database, destination: str) -> list[Delivery]:
    with db.session() as s:
        return list(s.scalars(select(Delivery).where(Delivery.destination == destination).order_by(Delivery.id)))


def job_state(db: Database, job_id: int) -> JobState:
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.state
