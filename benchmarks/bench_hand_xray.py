"""Time hand_xray on a 2500x3000 16-bit two-hand radiograph (median of several runs).

python benchmarks/bench_hand_xray.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pydicom

from dicomnode.plugins.api import ImageSeries, PipelineInputs, RunContext
from dicomnode.testing.synthetic import write_radiograph
from pipelines.hand_xray.phantoms import FONTS, MarkerSpec, PhantomSpec, make_phantom
from pipelines.hand_xray.pipeline import HandXrayPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    markers = (MarkerSpec("L", 0, height_px=150), MarkerSpec("R", 1, height_px=150, font=FONTS[3]))
    spec = PhantomSpec(sides=("L", "R"), markers=markers, rows=3000, columns=2500, bits_stored=16, seed=1)
    phantom = make_phantom(spec)
    pipeline = HandXrayPipeline()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_radiograph(phantom.stored, Path(tmp) / "big.dcm", bits_stored=16)
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
    print(f"image 3000x2500 uint16; result: {result.text}")
    print(f"read + run(): median {statistics.median(with_read) * 1000:.0f} ms")
    print(f"run(): median {statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms over {args.repeats}")


if __name__ == "__main__":
    main()
