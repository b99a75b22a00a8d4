"""A served node for the HTTP tests: the sphere pipeline, the HTTP API on a free port with a read and an admin
token, and one results destination (dcmtk storescp, started by the test when it wants it to answer)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomnode.config import Settings
from dicomnode.http.auth import token_sha256
from tests.support.node import node_settings
from tests.support.tools import DCMTK

READ_TOKEN = "read-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"
DEST_AET = "RESULTS"


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def served_settings(
    tmp_path: Path,
    database_url: str,
    dest_port: int,
    *,
    more_destinations: tuple[dict[str, Any], ...] = (),
    **sections: Any,
) -> Settings:
    settings = node_settings(
        tmp_path,
        database_url,
        pipelines=["test_spheres"],
        extra=["tests.support.sphere_pipeline:SpherePipeline"],
        dispatch={"max_attempts": 1},
        http={
            "enabled": True,
            "port": 0,
            "tokens": [
                {"name": "viewer", "role": "read", "sha256": token_sha256(READ_TOKEN)},
                {"name": "ops", "role": "admin", "sha256": token_sha256(ADMIN_TOKEN)},
            ],
            "viewer_url": "http://viewer.example/viewer?StudyInstanceUIDs={study_instance_uid}",
            **sections.pop("http", {}),
        },
        **sections,
    )
    destination = {"name": DEST_AET, "ae_title": DEST_AET, "host": "127.0.0.1", "port": dest_port, "results": True}
    return Settings.model_validate({**settings.model_dump(), "destinations": [destination, *more_destinations]})


@dataclass
class StoreSCP:
    """dcmtk's storescp as the results destination."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [str(DCMTK / "storescp"), "-aet", DEST_AET, "-od", str(self.folder), str(self.port)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
