"""The one way tests build a served node's settings: fast timers, loopback, a fresh data dir, and the
pipelines and destinations a test asks for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dicomnode.config import Settings


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
