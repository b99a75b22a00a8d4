"""Encoding speed (issue 14, target 5): a SEG of a 300-frame mask (target <= 2 s) and a TID 1500 SR with 100
measurement groups (target <= 1.5 s), through the node's own encoder as the runner calls it
(`dicomnode.encode.encode_result`, headers read without pixels, files written).

- **SEG**: a 300-slice 512x512 CT; a label map of one segment (an elliptic cylinder, "lungs") on every slice:
  300 BINARY frames. Timed: ``encode_result(kinds={SEG})``.
- **SR**: the same CT; a label map of 100 spheres (labels 1..100), one finding group per sphere with a
  volume and a diameter, a qualitative finding and the sphere as its segment (what lung and fracture
  pipelines produce). Timed: the SR step of ``encode_result`` (groups, image library, report, write) given
  the SEG it references; the whole ``encode_result`` of that SEG + SR is printed beside it.

Usage: python benchmarks/bench_encode.py [--slices 300] [--size 512] [--groups 100] [--rounds 3]
Prints min and median seconds of each over the rounds, beside the target, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's node, not an installed one

from dicomnode.encode import encode_result
from dicomnode.encode.seg import SeriesInfo, build_segs
from dicomnode.encode.sources import SourceIndex
from dicomnode.encode.sr import SrInputs, build_sr
from dicomnode.imaging import FrameSource
from dicomnode.plugins.api import (
    Code,
    FindingGroup,
    LabelMap,
    Measurement,
    OutputKind,
    PipelineResult,
    ProducedBy,
    QualitativeFinding,
    Segment,
    SegmentRef,
    local_code,
    stable_uid,
)
from dicomnode.testing.synthetic import write_ct_series

NODULE = Code("27925004", "SCT", "Nodule")
ABNORMAL = Code("49755003", "SCT", "Morphologically abnormal structure")
ANATOMY = Code("91723000", "SCT", "Anatomical structure")
LUNG = Code("39607008", "SCT", "Lung")
VOLUME = Code("118565006", "SCT", "Volume")
DIAMETER = Code("81827009", "SCT", "Diameter")
ML = Code("mL", "UCUM", "milliliter")
MM = Code("mm", "UCUM", "millimeter")
SOLID = QualitativeFinding(local_code("composition", "Composition"), local_code("solid", "Solid"))
SPACING = (1.0, 0.7, 0.7)


def _headers(slices: int, size: int, out_dir: Path) -> list[pydicom.Dataset]:
    """A CT of ``slices`` x ``size``² (air), read back without pixels as the runner hands it to the encoder."""
    paths = write_ct_series(np.full((slices, size, size), -1000, dtype=np.int16), out_dir, spacing=SPACING)
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def _sources(datasets: list[pydicom.Dataset]) -> list[FrameSource]:
    return [FrameSource(str(ds.SOPInstanceUID), 1, str(ds.SeriesInstanceUID)) for ds in datasets]


def lungs_result(datasets: list[pydicom.Dataset], size: int) -> PipelineResult:
    """One segment on every slice: an elliptic cylinder over half the image."""
    _, y, x = np.ogrid[0:1, 0:size, 0:size]
    cylinder = ((y - size / 2) / (size * 0.3)) ** 2 + ((x - size / 2) / (size * 0.4)) ** 2 <= 1
    array = np.repeat(cylinder.astype(np.uint8), len(datasets), axis=0)  # C-contiguous, as pipelines make them
    segment = Segment(1, "lungs", ANATOMY, LUNG)
    label_map = LabelMap(array, [segment], _sources(datasets), "lungs")
    return PipelineResult(ProducedBy.CLASSICAL, label_maps=[label_map], text="lungs")


def nodules_result(datasets: list[pydicom.Dataset], size: int, groups: int) -> PipelineResult:
    """``groups`` spheres (radius 4 voxels) spread over the volume, each a finding group with its segment."""
    slices = len(datasets)
    rng = np.random.default_rng(0)
    array = np.zeros((slices, size, size), dtype=np.uint8 if groups < 256 else np.uint16)
    zz, yy, xx = np.mgrid[-4:5, -4:5, -4:5]
    ball = zz**2 + yy**2 + xx**2 <= 16
    segments, findings = [], []
    for label in range(1, groups + 1):
        z, y, x = (int(rng.integers(5, n - 5)) for n in (slices, size, size))
        view = array[z - 4 : z + 5, y - 4 : y + 5, x - 4 : x + 5]
        view[ball] = label
        name = f"nodule {label}"
        segments.append(Segment(label, name, ABNORMAL, NODULE))
        voxels = int((array == label).sum()) if label <= 3 else int(ball.sum())  # exact for a few, else nominal
        volume_ml = voxels * float(np.prod(SPACING)) / 1000.0
        findings.append(
            FindingGroup(
                name,
                stable_uid("bench", name),
                NODULE,
                finding_site=LUNG,
                measurements=[Measurement(VOLUME, volume_ml, ML), Measurement(DIAMETER, 6.3, MM)],
                qualitative=[SOLID],
                segment=SegmentRef("nodules", label),
            )
        )
    label_map = LabelMap(array, segments, _sources(datasets), "nodules")
    return PipelineResult(ProducedBy.CLASSICAL, groups=findings, label_maps=[label_map], text=f"{groups} nodules")


def _info(kind: OutputKind) -> SeriesInfo:
    return SeriesInfo(hd.UID(), 9000, f"bench {kind.value}", "bench", "1.0", ProducedBy.CLASSICAL, "dicomnode")


def time_seg(result: PipelineResult, datasets: list[pydicom.Dataset], out_dir: Path) -> float:
    start = time.perf_counter()
    objects = encode_result(
        result, datasets, pipeline_name="bench", pipeline_version="1.0", out_dir=out_dir, kinds={OutputKind.SEG}
    )
    elapsed = time.perf_counter() - start
    frames = int(pydicom.dcmread(objects[0].path, stop_before_pixels=True).NumberOfFrames)
    if frames != len(datasets):
        raise SystemExit(f"the SEG has {frames} frames, expected {len(datasets)}")
    return elapsed


def time_sr(result: PipelineResult, datasets: list[pydicom.Dataset], out_dir: Path) -> float:
    """The SR step of ``encode_result`` (given the SEGs it references), with the file write."""
    index = SourceIndex(datasets)
    segs = build_segs(result.label_maps[0], index, result.groups, _info(OutputKind.SEG))
    start = time.perf_counter()
    sr = build_sr(result, SrInputs(index, segs, _info(OutputKind.SR), "CHEST"))
    out_dir.mkdir(parents=True, exist_ok=True)
    sr.save_as(out_dir / "sr.dcm", enforce_file_format=True)
    elapsed = time.perf_counter() - start
    content = hd.sr.srread(out_dir / "sr.dcm").content
    found = len(content.get_volumetric_roi_measurement_groups()) if isinstance(content, hd.sr.MeasurementReport) else 0
    if found != len(result.groups):
        raise SystemExit(f"the SR reads back {found} volumetric groups, expected {len(result.groups)}")
    return elapsed


def time_whole(result: PipelineResult, datasets: list[pydicom.Dataset], out_dir: Path) -> float:
    start = time.perf_counter()
    encode_result(
        result,
        datasets,
        pipeline_name="bench",
        pipeline_version="1.0",
        out_dir=out_dir,
        kinds={OutputKind.SEG, OutputKind.SR},
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=("seg", "sr", "whole"), default=["seg", "sr", "whole"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_encode_") as tmp:
        work = Path(tmp)
        datasets = _headers(args.slices, args.size, work / "ct")
        lungs = lungs_result(datasets, args.size)
        nodules = nodules_result(datasets, args.size, args.groups)
        every: dict[str, tuple[str, Callable[[], float], float | None]] = {
            "seg": (f"SEG, {args.slices} frames", lambda: time_seg(lungs, datasets, work / "seg"), 2.0),
            "sr": (f"SR, {args.groups} groups", lambda: time_sr(nodules, datasets, work / "sr"), 1.5),
            "whole": (
                f"SEG + SR of the {args.groups} nodules",
                lambda: time_whole(nodules, datasets, work / "whole"),
                None,
            ),
        }
        cases: dict[str, tuple[Callable[[], float], float | None, list[float]]] = {
            every[c][0]: (every[c][1], every[c][2], []) for c in args.cases
        }
        for round_ in range(args.rounds):
            order = list(cases) if round_ % 2 == 0 else list(reversed(cases))
            for name in order:
                run, _, times = cases[name]
                times.append(run())
    print(f"CT {args.slices} x {args.size}x{args.size}; {args.rounds} rounds alternating; load {os.getloadavg()}")
    print(f"{'':36}{'min s':>8}{'median s':>10}{'target s':>10}")
    missed = False
    for name, (_, target, times) in cases.items():
        best, median = min(times), statistics.median(times)
        missed |= target is not None and best > target
        print(f"{name:36}{best:8.2f}{median:10.2f}{(f'{target:.1f}' if target else '-'):>10}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
