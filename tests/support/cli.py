"""Running `python -m dicomnode ...` as a user does: a subprocess importing this tree, in a folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DICOMNODE_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def dicomnode_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dicomnode", *args]


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dicomnode_command(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )
