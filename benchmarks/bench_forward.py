"""Forwarding speed (issue 14 target 3): the node's dispatcher sending a CT series to Orthanc, against dcmtk's
storescu sending the same files to an Orthanc of its own, alternating the two over several rounds.

Usage: python benchmarks/bench_forward.py [--count 300] [--size 512] [--rounds 3] [--max-associations 1]

Then the results of one analysis (SR, SEG and summary of the test sphere pipeline) delivered by the node over
one association, against storescu sending the same three files (target: <= 2 s).

Both sides at their best: Orthanc and storescu run with TCP_NODELAY=1 in their environment (dcmtk reads it),
each measurement gets a fresh Orthanc with its own temporary storage. The node's time covers what forwarding
costs it: claiming the deliveries from its database, sending them over its association(s) and recording every
outcome, until the job is DONE. Prints every round, min and median of both, and the ratio dcmtk / node
(1.0 = as fast as storescu; the target is >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test support's Orthanc runner

from bench_receive import make_series as make_random_series  # noqa: E402

from dicomnode.config import Settings  # noqa: E402
from dicomnode.db import repository as repo  # noqa: E402
from dicomnode.db.engine import Database  # noqa: E402
from dicomnode.db.models import Job, JobKind, JobState, Study  # noqa: E402
from dicomnode.delivery import Dispatcher  # noqa: E402
from tests.support.orthanc import Orthanc  # noqa: E402

STORESCU = "/usr/bin/storescu"  # dcmtk's, not pynetdicom's app of the same name


def make_series(out_dir: Path, count: int, size: int) -> list[Path]:
    """``count`` random slices of ``size``² in one series (bench_receive's, its own UID)."""
    return make_random_series(out_dir, count, size, series_uid="1.2.826.0.1.3680043.8.498.77")


def with_orthanc(work: Path, send: Callable[[Orthanc], float], expected: int) -> float:
    orthanc = Orthanc(Path(tempfile.mkdtemp(dir=work, prefix="orthanc-")))
    orthanc.start()
    try:
        seconds = send(orthanc)
        stored = len(orthanc.get("/instances"))
        if stored != expected:
            raise SystemExit(f"Orthanc holds {stored} instances, expected {expected}")
        return seconds
    finally:
        orthanc.stop()


def dcmtk_send(paths: list[Path]) -> Callable[[Orthanc], float]:
    def send(orthanc: Orthanc) -> float:
        command = [STORESCU, "-aec", orthanc.aet, orthanc.host, str(orthanc.dicom_port), *map(str, paths)]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"storescu failed: {result.stderr[-2000:]}")
        return elapsed

    return send


def dcmtk_send_required(paths: list[Path]) -> Callable[[Orthanc], float]:
    """storescu proposing what the files need (-R), so SR and SEG objects go too."""

    def send(orthanc: Orthanc) -> float:
        command = [STORESCU, "-R", "-aec", orthanc.aet, orthanc.host, str(orthanc.dicom_port), *map(str, paths)]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"storescu failed: {result.stderr[-2000:]}")
        return elapsed

    return send


def analysis_results(work: Path) -> list[Path]:
    """SR, SEG and summary written by the test sphere pipeline on its phantom CT."""
    from dicomnode.runner.standalone import run_standalone
    from tests.support.phantoms import write_sphere_study

    write_sphere_study(work / "spheres")
    settings = Settings.model_validate(
        {"pipelines": {"enabled": ["test_spheres"], "extra": ["tests.support.sphere_pipeline:SpherePipeline"]}}
    )
    document = run_standalone(settings, "test_spheres", work / "spheres", [], work / "results", {})
    paths = [Path(item["path"]) for item in document["files"]]
    return [path if path.is_absolute() else work / "results" / path for path in paths]


def node_send(work: Path, paths: list[Path], max_associations: int) -> Callable[[Orthanc], float]:
    items = [(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID), str(p)) for p in paths]

    def send(orthanc: Orthanc) -> float:
        data_dir = Path(tempfile.mkdtemp(dir=work, prefix="node-"))
        settings = Settings.model_validate(
            {
                "node": {"data_dir": str(data_dir)},
                "dispatch": {"batch_size": len(paths)},
                "destinations": [
                    {
                        "name": "ORTHANC",
                        "ae_title": orthanc.aet,
                        "host": orthanc.host,
                        "port": orthanc.dicom_port,
                        "max_associations": max_associations,
                    }
                ],
            }
        )
        db = Database(settings.database_url)
        db.upgrade()
        with db.session() as s:
            study = Study(study_instance_uid="1.2.826.0.1.3680043.8.498.78")
            s.add(study)
            s.flush()
            job = repo.enqueue_job(
                s, kind=JobKind.FORWARD, pipeline="ORTHANC", pipeline_version="", dedup_key="bench",
                study_id=study.id, series_id=None, series_version=1, rule="forward", max_attempts=1,
                state=JobState.DELIVERING,
            )  # fmt: skip
            assert job is not None
            repo.add_deliveries(s, job, "ORTHANC", items)
            job_id = job.id
        dispatcher = Dispatcher(settings, db)
        started = time.perf_counter()
        while True:
            dispatcher.run_once()
            with db.session() as s:
                state = s.get(Job, job_id).state  # type: ignore[union-attr]
            if state is not JobState.DELIVERING:
                break
        elapsed = time.perf_counter() - started
        db.dispose()
        if state is not JobState.DONE:
            raise SystemExit(f"the forward job ended {state.value}")
        return elapsed

    return send


def alternate(
    work: Path, sides: dict[str, Callable[[Orthanc], float]], rounds: int, expected: int
) -> dict[str, list[float]]:
    """Each side once per round against a fresh Orthanc, the order reversed every other round; prints each."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_no in range(rounds):
        order = list(sides) if round_no % 2 == 0 else list(reversed(sides))
        for name in order:
            seconds = with_orthanc(work, sides[name], expected)
            times[name].append(seconds)
            print(f"round {round_no + 1}: {name:<15} {seconds:6.2f} s  {expected / seconds:6.1f} img/s")
    for name, values in times.items():
        print(f"{name:<15} min {min(values):6.2f} s  median {statistics.median(values):6.2f} s")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-associations", type=int, default=1)
    args = parser.parse_args()
    os.environ["TCP_NODELAY"] = "1"  # inherited by Orthanc and storescu (dcmtk reads it)
    with tempfile.TemporaryDirectory(prefix="bench-forward-") as tmp:
        work = Path(tmp)
        paths = make_series(work / "ct", args.count, args.size)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{len(paths)} CT slices {args.size}² ({mb:.0f} MB); node max_associations={args.max_associations}")
        sides = {"dcmtk storescu": dcmtk_send(paths), "dicomnode": node_send(work, paths, args.max_associations)}
        times = alternate(work, sides, args.rounds, len(paths))
        ref, node = times["dcmtk storescu"], times["dicomnode"]
        ratio_min, ratio_median = min(ref) / min(node), statistics.median(ref) / statistics.median(node)
        print(f"ratio dcmtk/node: min {ratio_min:.2f}  median {ratio_median:.2f}  (target >= 0.8)")

        results = analysis_results(work)
        print(f"\nresults of one analysis: {len(results)} objects ({', '.join(p.name.split('_')[0] for p in results)})")
        sides = {"dcmtk storescu": dcmtk_send_required(results), "dicomnode": node_send(work, results, 1)}
        times = alternate(work, sides, args.rounds, len(results))
        print(f"dicomnode delivers them in {statistics.median(times['dicomnode']):.2f} s (median; target <= 2 s)")


if __name__ == "__main__":
    main()
