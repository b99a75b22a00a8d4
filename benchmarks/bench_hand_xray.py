"""Time hand_xray on a 3000x2500 16-bit two-hand radiograph (median of several runs), or sweep a folder.

python benchmarks/bench_hand_xray.py [--repeats 7]
python benchmarks/bench_hand_xray.py --sweep ../shared/data   # every file, as if routed to hand_xray
python benchmarks/bench_hand_xray.py --sizes 1500x1250 3000x2500 4240x3536 [--repeats 5]   # scaling table

The sweep runs the pipeline on every readable image (DICOM, PNG/JPEG wrapped as Secondary Capture) and
counts the outcomes: assessed, not assessable, a clean input error (DicomNodeError, one line), or a
traceback (anything else: a bug). Files pydicom cannot read are counted apart (the node rejects them when
they arrive).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom

from dicomnode.errors import DicomNodeError
from dicomnode.plugins.api import ImageSeries, PipelineInputs, PipelineResult, RunContext
from dicomnode.testing.synthetic import write_radiograph
from pipelines.hand_xray.phantoms import FONTS, MarkerSpec, PhantomSpec, make_phantom
from pipelines.hand_xray.pipeline import HandXrayPipeline


def run_and_count(run: Callable[[], PipelineResult], label: str, counts: collections.Counter[str]) -> None:
    """Run one pipeline call of a sweep and count its outcome: assessed, not assessable, a clean input error
    (DicomNodeError, one line), or a traceback (anything else: a bug); print what is not a result."""
    try:
        result = run()
        counts["assessed" if result.assessed else "not assessable"] += 1
    except DicomNodeError as exc:
        counts["clean error"] += 1
        print(f"  clean error  {label}: {exc}")
    except Exception:  # a traceback: what the sweep is looking for
        counts["TRACEBACK"] += 1
        print(f"  TRACEBACK    {label}\n{traceback.format_exc()}")


def sweep(folder: Path) -> None:
    from dicomnode.importing import IMAGE_SUFFIXES, wrap_image_as_secondary_capture

    counts: collections.Counter[str] = collections.Counter()
    pipeline = HandXrayPipeline()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                series = ImageSeries([wrap_image_as_secondary_capture(path)])
            else:
                series = ImageSeries([pydicom.dcmread(path)], [path])
        except Exception:  # not an input the node would accept (not DICOM, broken file)
            counts["unreadable (rejected at the door)"] += 1
            continue
        inputs = PipelineInputs(series=[series])
        run_and_count(lambda inputs=inputs: pipeline.run(inputs, RunContext()), str(path.relative_to(folder)), counts)
    for outcome, n in sorted(counts.items()):
        print(f"{outcome:35s} {n}")


def _phantom(rows: int, columns: int) -> npt.NDArray[np.integer[Any]]:
    """The two-hand phantom at ``rows`` x ``columns``, the same anatomy scaled (0.1 mm pixels at 3000 rows)."""
    markers = (MarkerSpec("L", 0, height_mm=12), MarkerSpec("R", 1, height_mm=12, font=FONTS[3]))
    spec = PhantomSpec(
        sides=("L", "R"),
        markers=markers,
        rows=rows,
        columns=columns,
        bits_stored=16,
        seed=1,
        mm_per_px=0.1 * 3000 / rows,
    )
    return make_phantom(spec).stored


def scaling(sizes: list[str], repeats: int) -> None:
    """run() at each size (read inside the timing, as the worker does), sizes alternating over the repeats."""
    shapes = [(int(rows), int(columns)) for rows, columns in (size.lower().split("x") for size in sizes)]
    times: dict[tuple[int, int], list[float]] = {shape: [] for shape in shapes}
    assessed: dict[tuple[int, int], bool] = {}
    pipeline = HandXrayPipeline()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for rows, columns in shapes:
            spacing = 0.1 * 3000 / rows
            paths[(rows, columns)] = write_radiograph(
                _phantom(rows, columns),
                Path(tmp) / f"{rows}x{columns}.dcm",
                bits_stored=16,
                pixel_spacing=(spacing, spacing),
            )
        for repeat in range(repeats):
            for shape in shapes if repeat % 2 == 0 else list(reversed(shapes)):
                start = time.perf_counter()
                ds = pydicom.dcmread(paths[shape])
                result = pipeline.run(PipelineInputs(series=[ImageSeries([ds], [paths[shape]])]), RunContext())
                times[shape].append(time.perf_counter() - start)
                assessed[shape] = result.assessed
    print(f"hand_xray read + run(), {repeats} repeats alternating; load {os.getloadavg()}")
    print(f"{'rows x columns':>16}{'Mpixel':>8}{'min ms':>9}{'median ms':>11}{'ms/Mpixel':>11}  result")
    for (rows, columns), values in times.items():
        mpx = rows * columns / 1e6
        best = min(values)
        print(
            f"{f'{rows}x{columns}':>16}{mpx:8.2f}{best * 1000:9.0f}{statistics.median(values) * 1000:11.0f}"
            f"{best * 1000 / mpx:11.0f}  {'assessed' if assessed[(rows, columns)] else 'NOT ASSESSED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sweep", type=Path, default=None)
    parser.add_argument("--sizes", nargs="+", default=None, help="ROWSxCOLUMNS ...: print the scaling table")
    args = parser.parse_args()
    if args.sweep is not None:
        sweep(args.sweep)
        return
    if args.sizes:
        scaling(args.sizes, args.repeats)
        return
    markers = (MarkerSpec("L", 0, height_mm=12), MarkerSpec("R", 1, height_mm=12, font=FONTS[3]))
    spec = PhantomSpec(
        sides=("L", "R"), markers=markers, rows=3000, columns=2500, bits_stored=16, seed=1, mm_per_px=0.1
    )
    phantom = make_phantom(spec)
    pipeline = HandXrayPipeline()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_radiograph(phantom.stored, Path(tmp) / "big.dcm", bits_stored=16, pixel_spacing=(0.1, 0.1))
        times, with_read = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ds = pydicom.dcmread(path)  # a fresh read each time: pixel decoding is part of the cost
            inputs = PipelineInputs(series=[ImageSeries([ds], [path])])
            begin_run = time.perf_counter()
            result = pipeline.run(inputs, RunContext())
            end = time.perf_counter()
            times.append(end - begin_run)
            with_read.append(end - start)
        tracemalloc.start()
        pipeline.run(PipelineInputs(series=[ImageSeries([pydicom.dcmread(path)], [path])]), RunContext())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"image 3000x2500 uint16; result: {result.text}")
    print(f"peak traced memory of one run: {peak / 1024**2:.0f} MB")
    print(f"read + run(): median {statistics.median(with_read) * 1000:.0f} ms")
    print(f"run(): median {statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms over {args.repeats}")


if __name__ == "__main__":
    main()
