"""Time hand_xray on a 3000x2500 16-bit two-hand radiograph (median of several runs), or sweep a folder.

python benchmarks/bench_hand_xray.py [--repeats 7]
python benchmarks/bench_hand_xray.py --sweep ../shared/data   # every file, as if routed to hand_xray

The sweep runs the pipeline on every readable image (DICOM, PNG/JPEG wrapped as Secondary Capture) and
counts the outcomes: assessed, not assessable, a clean input error (DicomNodeError, one line), or a
traceback (anything else: a bug). Files pydicom cannot read are counted apart (the node rejects them when
they arrive).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sweep", type=Path, default=None)
    args = parser.parse_args()
    if args.sweep is not None:
        sweep(args.sweep)
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
