"""The worker supervisor: a crash-looping worker is restarted with growing delays, and says why."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select

from dicomnode.config import Settings
from dicomnode.db.engine import Database
from dicomnode.db.models import WorkerProcess
from dicomnode.runner.supervisor import WorkerSupervisor


def test_a_crash_looping_worker_backs_off_and_its_reason_is_recorded(tmp_path: Path) -> None:
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path)}})
    db = Database(settings.database_url)
    db.upgrade()
    supervisor = WorkerSupervisor(settings, db, tmp_path / "s.json", count=1)
    supervisor.command = [sys.executable, "-c", "import sys; sys.exit(3)"]  # a worker that dies at once
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run_forever, args=(stop,))
    thread.start()
    time.sleep(9.0)
    stop.set()
    thread.join(timeout=20)
    # Restarted at once it would have started about 9 times; with delays of 1, 2, 4 s it starts 4 times.
    assert 3 <= supervisor.spawned <= 5
    with db.session() as s:
        rows = list(s.scalars(select(WorkerProcess)))
    assert rows and all(r.state == "exited" for r in rows)
    assert any("exited with code 3" in r.detail and "restart in 4 s" in r.detail for r in rows)
