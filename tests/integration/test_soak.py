"""The bounded soak of benchmarks/soak.py in the suite: parallel senders into `dicomnode serve` while worker
processes and the whole node are SIGKILLed at random (and, on Postgres, every backend is terminated twice);
every instance stored once, every job DONE once per series version, every result and forwarded image
delivered once. The long run is `python benchmarks/soak.py` (see its options)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import soak
from tests.conftest import POSTGRES_ADMIN_URL, require_tool

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_parallel_senders_and_killed_workers_lose_and_repeat_nothing(tmp_path: Path, backend: str) -> None:
    require_tool("storescu")
    require_tool("Orthanc")
    admin = None
    if backend == "postgres":
        import sqlalchemy as sa

        try:
            with sa.create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3}).connect():
                admin = POSTGRES_ADMIN_URL
        except Exception as exc:  # any connection failure means: no server here
            pytest.skip(f"no Postgres server reachable at {POSTGRES_ADMIN_URL}: {exc}")
    report = soak(
        tmp_path,
        instances=160,
        senders=4,
        workers=2,
        worker_kills=3,
        node_kills=1,
        postgres_kills=2,
        timeout=240,
        postgres_admin=admin,
    )
    assert report.problems == []
    assert report.instances_stored == report.instances_sent == 160
    assert report.jobs_per_version_max == 1 and report.deliveries_sent_twice == 0
