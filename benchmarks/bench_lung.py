"""Benchmark (not a test): lung_longitudinal on a 300-slice 512×512 chest CT phantom.

Targets on the 2-core reference machine: run() under 20 s, peak memory under 3 GB.
Usage: python benchmarks/bench_lung.py [--slices 300] [--size 512]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import pydicom

from dicomnode.plugins.api import ImageSeries, PipelineInputs, RunContext
from dicomnode.testing.synthetic import write_ct_series
from pipelines.lung_longitudinal.phantoms import make_chest_phantom
from pipelines.lung_longitudinal.pipeline import LungLongitudinalPipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    spacing = (1.0, 0.7 * 512 / args.size, 0.7 * 512 / args.size)
    phantom = make_chest_phantom((args.slices, args.size, args.size), spacing)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_ct_series(phantom.hu, Path(tmp), spacing=spacing)
        del phantom
        series = ImageSeries([pydicom.dcmread(p) for p in paths], paths)
        start = time.perf_counter()
        series.volume()
        load_s = time.perf_counter() - start
        tracemalloc.start()
        start = time.perf_counter()
        result = LungLongitudinalPipeline().run(PipelineInputs([series]), RunContext())
        run_s = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    v = result.details["time_point"]
    print(f"volume {args.slices}x{args.size}x{args.size}: load {load_s:.1f} s, run {run_s:.1f} s")
    print(f"peak traced memory during run {peak / 1024**3:.2f} GB; process max RSS {rss_gb:.2f} GB")
    print(f"lung {v['roi_ml']:.0f} mL, abnormal {v['abnormal_ml']:.1f} mL, lesions {len(result.details['lesions'])}")


if __name__ == "__main__":
    main()
