"""Benchmark (not a test): cardiac_lv on a 20-frame cine at one position and on a 12-position stack.

Targets on the 2-core reference machine: one position well under 1 s (the patent claims 0.2 s per study),
a 12-position stack with every position analysed under 10 s. Times exclude writing the phantom DICOM and
include reading the pixels. Also prints the errors against the phantom's truth next to the LVQuan18 winner's.
Usage: python benchmarks/bench_cardiac.py [--size 256] [--frames 20] [--positions 12] [--repeat 3]
       python benchmarks/bench_cardiac.py --sizes 128 256 384 [--frames 20] [--repeat 3]   # scaling table
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from dicomnode.plugins.api import ImageSeries, PipelineInputs, RunContext
from dicomnode.testing.cine import write_cine
from pipelines.cardiac_lv.metrics import ANCHORS, index_metrics
from pipelines.cardiac_lv.phantoms import PhantomSpec, make_cine, make_stack
from pipelines.cardiac_lv.pipeline import CardiacLvPipeline


def _series(paths: list[Path]) -> ImageSeries:
    return ImageSeries([pydicom.dcmread(p, stop_before_pixels=True) for p in paths], paths)


def _time_run(paths: list[Path], params: dict[str, object], repeat: int) -> tuple[float, float, object]:
    """Best wall-clock and CPU seconds of ``repeat`` runs (CPU time shows the cost on a shared machine)."""
    best, best_cpu, result = np.inf, np.inf, None
    for _ in range(repeat):
        series = _series(paths)  # a fresh series each time: pixels are read inside the timing
        start, cpu = time.perf_counter(), time.process_time()
        result = CardiacLvPipeline().run(PipelineInputs([series]), RunContext(params=params))
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu, result


OBLIQUE: dict[str, Any] = {
    "row_direction": (-0.104592, 0.346381, -0.932245),
    "column_direction": (-0.733192, -0.660188, -0.163037),
}


def scaling(sizes: list[int], frames: int, repeat: int) -> None:
    """One position of ``frames`` frames at each matrix size (the same 350 mm field of view), each size's
    best of ``repeat`` runs, the sizes alternating over the repeats."""
    times: dict[int, list[tuple[float, float]]] = {size: [] for size in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for size in sizes:
            spacing = 350.0 / size
            spec = PhantomSpec(shape=(size, size), spacing_mm=spacing, n_frames=frames, centre_offset_mm=(12, -8))
            paths[size] = write_cine(
                make_cine(spec).images[np.newaxis], Path(tmp) / str(size), pixel_spacing=(spacing, spacing), **OBLIQUE
            )
        for round_ in range(repeat):
            for size in sizes if round_ % 2 == 0 else list(reversed(sizes)):
                seconds, cpu, _ = _time_run(paths[size], {}, 1)
                times[size].append((seconds, cpu))
    print(f"cardiac_lv, one position of {frames} frames, {repeat} rounds alternating; load {os.getloadavg()}")
    print(f"{'matrix':>8}{'Mpixel (all frames)':>21}{'min s':>8}{'median s':>10}{'min CPU s':>11}{'s/Mpixel':>10}")
    for size, values in times.items():
        walls = [w for w, _ in values]
        mpx = size * size * frames / 1e6
        best = min(walls)
        print(
            f"{size:>8}{mpx:21.2f}{best:8.2f}{statistics.median(walls):10.2f}"
            f"{min(c for _, c in values):11.2f}{best / mpx:10.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--positions", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="matrix sizes: print the scaling table")
    args = parser.parse_args()
    if args.sizes:
        scaling(args.sizes, args.frames, args.repeat)
        return
    spacing = 350.0 / args.size
    spec = PhantomSpec(
        shape=(args.size, args.size), spacing_mm=spacing, n_frames=args.frames, centre_offset_mm=(12, -8)
    )
    oblique = OBLIQUE
    with tempfile.TemporaryDirectory() as tmp:
        one = make_cine(spec)
        paths = write_cine(one.images[np.newaxis], Path(tmp) / "one", pixel_spacing=(spacing, spacing), **oblique)
        seconds, cpu, result = _time_run(paths, {}, args.repeat)
        metrics = index_metrics(np.array(result.details["indices"]), one.indices)  # type: ignore[union-attr]
        print(
            f"one position, {args.frames} frames of {args.size}x{args.size}: run {seconds:.2f} s wall, "
            f"{cpu:.2f} s CPU (target < 1 s)"
        )
        print(
            "  MAE areas {areas_mm2:.0f} mm2, dimensions {dimensions_mm:.2f} mm, RWT {rwt_mm:.2f} mm".format(
                **metrics["mae"]
            )
            + " (LVQuan18 winner {areas_mm2:.0f} / {dimensions_mm:.2f} / {rwt_mm:.2f})".format(**ANCHORS)
        )
        stack = make_stack(args.positions, 10.0, spec)
        paths = write_cine(
            stack.images, Path(tmp) / "stack", pixel_spacing=(spacing, spacing), slice_spacing=10.0, **oblique
        )
        seconds, cpu, result = _time_run(paths, {"analyse_all_positions": True}, 1)
        volumes = result.details.get("volumes", {})  # type: ignore[union-attr]
        print(
            f"stack, {args.positions} positions x {args.frames} frames, every position: "
            f"run {seconds:.2f} s wall, {cpu:.2f} s CPU (target < 10 s)"
        )
        print(
            f"  EDV {volumes.get('edv_ml', float('nan')):.1f} mL (truth {stack.edv_ml:.1f}), "
            f"ESV {volumes.get('esv_ml', float('nan')):.1f} mL (truth {stack.esv_ml:.1f}), "
            f"EF {volumes.get('ef_percent', float('nan')):.1f} % (truth {stack.ef_percent:.1f})"
        )
        print(f"  process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
