"""Scoring the pipeline on phantoms: limb count, marker letters and the kept hand, each right or wrong.

Shared by the accuracy test and ``benchmarks/hand_xray_accuracy.py``. Each phantom is written as a DX file with
``dicomnode.testing.synthetic.write_radiograph`` and read back, so the whole input path (rescale, window, photometric)
is exercised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from dicomnode.plugins.api import ImageSeries, PipelineInputs, PipelineResult, RunContext
from dicomnode.testing.synthetic import write_radiograph
from pipelines.hand_xray.phantoms import BoolMask, Phantom, make_phantom, random_spec
from pipelines.hand_xray.pipeline import HandXrayPipeline


@dataclass(frozen=True)
class CaseScore:
    limb_count_ok: bool
    markers_ok: bool
    selected_ok: bool


def _box(mask: BoolMask) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two (row0, col0, row1, col1) boxes."""
    rows = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    cols = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = rows * cols
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def run_on_phantom(phantom: Phantom, path: Path, **write_options: Any) -> PipelineResult:
    """Write ``phantom`` as DICOM at ``path``, read it back and run the pipeline on it."""
    write_radiograph(
        phantom.stored,
        path,
        photometric=phantom.photometric,
        bits_stored=phantom.bits_stored,
        **write_options,
    )
    ds = pydicom.dcmread(path)
    return HandXrayPipeline().run(PipelineInputs(series=[ImageSeries([ds], [path])]), RunContext())


def score(phantom: Phantom, result: PipelineResult) -> CaseScore:
    """Compare a result with the phantom's truth."""
    details = result.details
    letters = sorted(m["letter"] for m in details["markers"])
    left = phantom.mask_of("L")
    crop = tuple(details["crop_region"])
    if left is not None:
        selected_ok = details["selected_side"] == "L" and box_iou(crop, _box(left)) >= 0.6
    else:
        only = phantom.hand_masks[0]
        selected_ok = details["selected_side"] == "R" and "no_left_hand" in details["flags"]
        selected_ok = selected_ok and box_iou(crop, _box(only)) >= 0.6
    return CaseScore(
        limb_count_ok=details["limb_count"] == phantom.limb_count,
        markers_ok=letters == sorted(phantom.marker_letters),
        selected_ok=selected_ok,
    )


def evaluate(n_cases: int, seed: int, work_dir: Path) -> Iterator[tuple[int, Phantom, PipelineResult, CaseScore]]:
    """Generate ``n_cases`` random phantoms and score the pipeline on each."""
    rng = np.random.default_rng(seed)
    for k in range(n_cases):
        phantom = make_phantom(random_spec(rng))
        result = run_on_phantom(phantom, work_dir / f"case{k:04d}.dcm")
        yield k, phantom, result, score(phantom, result)
