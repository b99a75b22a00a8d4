"""Every command, given what users get wrong (a missing path, an unreachable database, a bad flag, a bad
configuration value, an unknown pipeline or job id), answers with one line on stderr and a non-zero exit status,
never a traceback. Each runs as a subprocess, as a user types it."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dicomnode.db.engine import Database
from tests.support.cli import run_cli
from tests.support.net import free_port

pytestmark = pytest.mark.integration

# Nothing listens on port 1 of the loopback: the connection is refused at once.
DEAD_DB = "postgresql://dicomnode@127.0.0.1:1/dicomnode"


def _case(name: str, *args: str) -> pytest.ParameterSet:
    return pytest.param(list(args), id=name)


CASES = [
    _case("bad-flag", "serve", "--no-such-flag"),
    _case("unknown-command", "frobnicate"),
    _case("serve-bad-port", "serve", "--port", "99999", "--data-dir", "{tmp}/d"),
    _case("serve-bad-config-value", "serve", "--config", "{tmp}/bad.toml"),
    _case("serve-bad-destination", "serve", "--destination", "nonsense", "--data-dir", "{tmp}/d"),
    _case("serve-dead-database", "serve", "--data-dir", "{tmp}/d", "--database-url", DEAD_DB),
    _case("serve-unwritable-data-dir", "serve", "--data-dir", "/proc/dicomnode/data"),
    _case("worker-dead-database", "worker", "--data-dir", "{tmp}/d", "--database-url", DEAD_DB),
    _case("config-check-bad-value", "config", "check", "--config", "{tmp}/bad.toml"),
    _case("jobs-dead-database", "jobs", "list", "--database-url", DEAD_DB),
    _case("jobs-no-database-here", "jobs", "list", "--data-dir", "{tmp}/empty"),
    _case("jobs-unknown-id", "jobs", "show", "424242", "--data-dir", "{tmp}/node"),
    _case("jobs-bad-state", "jobs", "list", "--state", "SLEEPING", "--data-dir", "{tmp}/node"),
    _case("status-dead-database", "status", "--database-url", DEAD_DB),
    _case("run-unknown-pipeline", "run", "no_such_pipeline", "{tmp}", "--output", "{tmp}/out"),
    _case("run-missing-input", "run", "hand_xray", "{tmp}/missing", "--output", "{tmp}/out"),
    _case("pipelines-missing-config", "pipelines", "--config", "{tmp}/missing.toml"),
    _case("route-explain-missing-folder", "route", "explain", "{tmp}/missing"),
    _case("train-missing-data", "train", "bone_age", "--data", "{tmp}/missing", "--output", "{tmp}/w"),
    _case("evaluate-missing-data", "evaluate", "bone_age", "--data", "{tmp}/missing"),
    _case("import-missing-file", "import", "{tmp}/missing.png", "--output", "{tmp}/out"),
    _case("import-not-a-picture", "import", "{tmp}/garbage.png", "--output", "{tmp}/out"),
    _case("send-missing-folder", "send", "{tmp}/missing", "PACS@127.0.0.1:104"),
    _case("send-bad-address", "send", "{tmp}", "PACS-at-somewhere"),
    _case("send-no-dicom-files", "send", "{tmp}/empty", "PACS@127.0.0.1:104"),
    _case("completion-unknown-shell", "completion", "tcsh"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "bad.toml").write_text('[node]\nport = "eleven"\nae_title = "THIS AE TITLE IS FAR TOO LONG"\n')
    (tmp / "garbage.png").write_text("not a picture\n")
    (tmp / "empty").mkdir()
    db = Database(f"sqlite:///{tmp / 'node' / 'dicomnode.sqlite3'}")
    db.upgrade()  # a real, empty node database: unknown job ids are looked up in it
    db.dispose()
    return tmp


@pytest.fixture(scope="module")
def answers(workdir: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case's run, four at a time (each is a fresh interpreter: most of its time is start-up)."""

    def one(args: list[str]) -> subprocess.CompletedProcess[str]:
        return run_cli(*[a.replace("{tmp}", str(workdir)) for a in args], cwd=workdir, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, [case.values[0] for case in CASES]))
    return {" ".join(case.values[0]): result for case, result in zip(CASES, results, strict=True)}  # type: ignore[arg-type]


@pytest.mark.parametrize("args", CASES)
def test_user_error_is_one_line(args: list[str], answers: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = answers[" ".join(args)]
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dicomnode"), lines[0]
    assert "error" in lines[0]


def test_send_to_nobody_says_so_in_one_line(workdir: Path, tmp_path: Path) -> None:
    import numpy as np

    from dicomnode.testing.synthetic import StudyInfo, write_ct_series

    write_ct_series(np.zeros((2, 8, 8), dtype=np.int16), tmp_path / "ct", info=StudyInfo())
    result = run_cli("send", str(tmp_path / "ct"), f"PACS@127.0.0.1:{free_port()}", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 of 2 files not stored" in lines[0] and "could not connect" in lines[0]
    assert "sent 0/2 files" in result.stdout


def test_every_argument_has_help() -> None:
    import argparse

    from dicomnode.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, child in action.choices.items():
                    if not helps.get(name):
                        missing.append(f"{path} {name}")
                    walk(child, f"{path} {name}")
            elif action.help is None:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "dicomnode")
    assert not missing, missing
