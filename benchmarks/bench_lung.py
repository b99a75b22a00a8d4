"""Benchmark (not a test): lung_longitudinal on a 300-slice 512×512 chest CT phantom, or a sweep of a folder.

Targets (issue 14, target 5) on the 2-core reference machine: run() of 300×512×512 within 15 s, peak memory
per job within 2 GB. Each size runs in its own process (the peak RSS is per process) for ``--rounds`` rounds;
the table gives min and median of the wall time, the CPU time of the run (what the machine's other load
does not inflate), the peak memory Python allocated during the run and the job process's peak RSS (GiB; the
loaded series included), against the time target scaled to the size.
Usage: python benchmarks/bench_lung.py [--sizes 100,200,300] [--size 512] [--rounds 3]
       python benchmarks/bench_lung.py --sweep ../shared/data   # every series, as if routed to the pipeline

The sweep groups the readable DICOM files of each folder by SeriesInstanceUID and runs the pipeline on each
series: assessed, not assessable, a clean input error (DicomNodeError), or a traceback (a bug).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pydicom

from dicomnode.plugins.api import ImageSeries, PipelineInputs, RunContext
from dicomnode.testing.synthetic import write_ct_series
from pipelines.lung_longitudinal.phantoms import make_chest_phantom
from pipelines.lung_longitudinal.pipeline import LungLongitudinalPipeline


def sweep(folder: Path) -> None:
    import collections

    from bench_hand_xray import run_and_count  # the same counting for both pipelines' sweeps

    from dicomnode.imaging import read_header

    groups: dict[tuple[Path, str], list[tuple[pydicom.Dataset, Path]]] = collections.defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = read_header(path)  # as the node reads it (SOP UIDs repaired from the file meta)
        except Exception:  # not DICOM: rejected when it arrives
            continue
        groups[(path.parent, str(ds.get("SeriesInstanceUID", "") or ""))].append((ds, path))  # no UID: the folder
    counts: collections.Counter[str] = collections.Counter()
    pipeline = LungLongitudinalPipeline()
    for (parent, _), members in sorted(groups.items(), key=lambda item: str(item[0])):
        series = ImageSeries([ds for ds, _ in members], [path for _, path in members])
        inputs = PipelineInputs([series])
        label = f"{parent.relative_to(folder)} ({len(members)} files)"
        run_and_count(lambda inputs=inputs: pipeline.run(inputs, RunContext()), label, counts)
    for outcome, n in sorted(counts.items()):
        print(f"{outcome:20s} {n} series")


TARGET_S, TARGET_GB, TARGET_SLICES = 15.0, 2.0, 300


def peak_rss_gb() -> float:
    """This process's peak resident memory (GiB). VmHWM belongs to the address space the exec created; the
    rusage maximum would include the parent's memory the child had between fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def write_phantom(slices: int, size: int, folder: Path) -> None:
    """The phantom of ``slices`` × ``size``² written as a CT series (in the parent: its memory is not the job's)."""
    spacing = (1.0, 0.7 * 512 / size, 0.7 * 512 / size)
    phantom = make_chest_phantom((slices, size, size), spacing)
    write_ct_series(phantom.hu, folder, spacing=spacing)


def one_run(folder: Path) -> dict[str, float]:
    """Load the series in ``folder`` and run the pipeline once: a job's figures (this process's peak RSS)."""
    paths = sorted(folder.glob("*.dcm"))
    series = ImageSeries([pydicom.dcmread(p) for p in paths], paths)
    start = time.perf_counter()
    series.volume()
    load_s = time.perf_counter() - start
    tracemalloc.start()
    start, cpu = time.perf_counter(), time.process_time()
    result = LungLongitudinalPipeline().run(PipelineInputs([series]), RunContext())
    run_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    v = result.details["time_point"]
    return {
        "load_s": load_s,
        "run_s": run_s,
        "cpu_s": cpu_s,
        "traced_gb": peak / 1024**3,
        "rss_gb": peak_rss_gb(),
        "lung_ml": v["roi_ml"],
        "abnormal_ml": v["abnormal_ml"],
        "lesions": len(result.details["lesions"]),
    }


def table(sizes: list[int], size: int, rounds: int) -> None:
    print(f"lung_longitudinal phantom, {size}x{size} slices, {rounds} rounds per size (one process each)")
    print("slices | run s min / median | CPU s min / median | traced GB | max RSS GB | target s | lung mL")
    for slices in sizes:
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            write_phantom(slices, size, Path(tmp))
            for _ in range(rounds):
                out = subprocess.run(
                    [sys.executable, __file__, "--one", tmp], check=True, capture_output=True, text=True
                )
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        run_s = [r["run_s"] for r in runs]
        cpu_s = [r["cpu_s"] for r in runs]
        target = TARGET_S * slices / TARGET_SLICES
        print(
            f"{slices:6d} | {min(run_s):5.1f} / {statistics.median(run_s):5.1f} | "
            f"{min(cpu_s):5.1f} / {statistics.median(cpu_s):5.1f} | {max(r['traced_gb'] for r in runs):5.2f} | "
            f"{max(r['rss_gb'] for r in runs):5.2f} (target {TARGET_GB:.1f} at 300) | {target:5.1f} | "
            f"{runs[0]['lung_ml']:.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,200,300", help="slice counts, comma-separated")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", type=Path, default=None, help=argparse.SUPPRESS)  # a series folder: one job
    parser.add_argument("--sweep", type=Path, default=None)
    args = parser.parse_args()
    if args.sweep is not None:
        sweep(args.sweep)
    elif args.one is not None:
        print(json.dumps(one_run(args.one)))
    else:
        table([int(n) for n in args.sizes.split(",")], args.size, args.rounds)


if __name__ == "__main__":
    main()
