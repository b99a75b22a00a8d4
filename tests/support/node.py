"""The one way tests build a served node's settings (fast timers, loopback, a fresh data dir, and the
pipelines and destinations a test asks for), and serve a study through it to Orthanc."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dicomnode.config import Settings
from dicomnode.db.models import Job, JobKind, JobState
from dicomnode.node import Node
from tests.support.net import storescu, wait_for


def node_settings(
    tmp_path: Path,
    database_url: str,
    *,
    orthanc: Any = None,
    pipelines: Sequence[str] = (),
    extra: Sequence[str] = (),
    params: Mapping[str, Mapping[str, Any]] | None = None,
    forward: bool = True,
    worker: Mapping[str, Any] | None = None,
    **sections: Mapping[str, Any],
) -> Settings:
    """Settings of a node on a free port under ``tmp_path/node``; Orthanc (when given) is the destination for
    results and, with ``forward``, for every received image."""
    data: dict[str, Any] = {
        "node": {"port": 0, "data_dir": str(tmp_path / "node"), "ae_title": "DICOMNODE"},
        "database": {"url": database_url},
        "completion": {"series_quiet_seconds": 3, "association_end_grace_seconds": 0.5, "poll_seconds": 0.2},
        "worker": {"processes": 1, "poll_seconds": 0.2, **(worker or {})},
        "dispatch": {"poll_seconds": 0.2, "backoff_base_seconds": 0.5},
        "pipelines": {"enabled": list(pipelines) or ["*"], "extra": list(extra), "params": dict(params or {})},
    }
    if orthanc is not None:
        data["destinations"] = [
            {
                "name": "ORTHANC",
                "ae_title": orthanc.aet,
                "host": "127.0.0.1",
                "port": orthanc.dicom_port,
                "results": True,
                "forward": forward,
            }
        ]
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return Settings.model_validate(data)


def pipeline_jobs(node: Node) -> list[Job]:
    """The node's pipeline jobs with their outputs and events loaded (usable after the session closes)."""
    with node.db.session() as s:
        jobs = list(s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE).order_by(Job.id)))
        for job in jobs:
            _ = job.outputs, job.events
        return jobs


def serve_one_job(settings: Settings, files: Sequence[Path], orthanc: Any, timeout: float = 180) -> Job:
    """Start a node with ``settings``, send ``files`` with storescu as the modality, wait until its one pipeline
    job has finished and (when done) every output has arrived in ``orthanc``; stop the node, return the job."""
    node = Node(settings)
    node.start()
    try:
        storescu(files, node.scp.port)
        finished = (JobState.DONE, JobState.FAILED)
        wait_for(lambda: any(j.state in finished for j in pipeline_jobs(node)), timeout, "the job")
        (job,) = pipeline_jobs(node)
        if job.state is JobState.DONE:
            outputs = {o.sop_instance_uid for o in job.outputs}
            wait_for(lambda: outputs <= orthanc.sop_instance_uids(), 60, "delivery to Orthanc")
    finally:
        node.stop()
    return job
