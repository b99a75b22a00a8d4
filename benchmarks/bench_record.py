"""The recording step of the receive path alone (issue 14, target 1): ``DatabaseSink.instance_received``
for N instances of one series over one association (SQLite, WAL), wall and CPU milliseconds per instance.

Compares checkouts: run it with the node of another checkout first on the path, alternating, e.g.

    for i in 1 2 3; do for c in ../main .; do python benchmarks/bench_record.py --checkout $c; done; done

Usage: python benchmarks/bench_record.py [--count 300] [--checkout PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    sys.path.insert(0, str(args.checkout.resolve()))
    import numpy as np
    import pydicom

    from dicomnode.db.engine import Database
    from dicomnode.ingest import DatabaseSink
    from dicomnode.scp.handlers import ReceivedInstance
    from dicomnode.testing.synthetic import write_ct_series

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_ct_series(np.zeros((args.count, 8, 8)), Path(tmp) / "ct")
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
        db = Database(f"sqlite:///{tmp}/node.sqlite3")
        db.upgrade()
        sink = DatabaseSink(db)
        sink.association_started("bench", "MOD", "NODE")
        instances = [
            ReceivedInstance(
                str(h.SOPInstanceUID),
                str(h.SOPClassUID),
                str(h.SeriesInstanceUID),
                str(h.StudyInstanceUID),
                "1.2.840.10008.1.2.1",
                p,
                1000,
                "MOD",
                "NODE",
                "bench",
                h,
            )
            for h, p in zip(headers, paths, strict=True)
        ]
        start, cpu = time.perf_counter(), time.process_time()
        for instance in instances:
            sink.instance_received(instance)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        sink.association_ended("bench")
        db.dispose()
    code = Path(sys.modules["dicomnode"].__file__ or "").parent
    print(
        f"{code}: {wall / args.count * 1000:.2f} ms wall, {cpu / args.count * 1000:.2f} ms CPU per instance "
        f"({args.count} instances); load {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
