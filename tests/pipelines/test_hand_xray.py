"""hand_xray on phantoms with known answers (written as DX with dicomnode.testing.synthetic, read back), PNG import,
the accuracy over generated cases, and the real Fuji CR with a lead "R" from the shared data."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from dicomnode.importing import load_input_folder, wrap_image_as_secondary_capture
from dicomnode.plugins.api import (
    Environment,
    ImageSeries,
    OutputKind,
    Pipeline,
    PipelineInputs,
    PipelineResult,
    RunContext,
)
from pipelines.hand_xray.accuracy import box_iou, evaluate, run_on_phantom
from pipelines.hand_xray.phantoms import FONTS, MarkerSpec, Phantom, PhantomSpec, make_phantom
from pipelines.hand_xray.pipeline import HandXrayPipeline

SHARED_CR = Path(__file__).resolve().parents[3] / "shared/data/conformance/pydicom_data/RG3_J2KR.dcm"


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def _two_hands(**kwargs: object) -> PhantomSpec:
    markers = (MarkerSpec("L", 0, height_px=34), MarkerSpec("R", 1, height_px=34, font=FONTS[2], angle_deg=20))
    options: dict[str, object] = {"sides": ("L", "R"), "markers": markers, "seed": 5}
    options.update(kwargs)
    return PhantomSpec(**options)  # type: ignore[arg-type]


def _run(phantom: Phantom, tmp_path: Path, **write: object) -> PipelineResult:
    return run_on_phantom(phantom, tmp_path / "hand.dcm", **write)


def _kept_left_iou(phantom: Phantom, result: PipelineResult) -> float:
    left = phantom.mask_of("L")
    assert left is not None
    return box_iou(tuple(result.details["crop_region"]), _mask_box(left))


def test_pipeline_honours_the_contract() -> None:
    pipeline = HandXrayPipeline()
    assert isinstance(pipeline, Pipeline)
    assert pipeline.is_available(Environment())[0]
    assert pipeline.produces == frozenset({OutputKind.SR, OutputKind.SUMMARY})
    assert "HAND" in pipeline.selector.body_parts


def test_two_hands_with_markers_keeps_the_left(tmp_path: Path) -> None:
    phantom = make_phantom(_two_hands())
    result = _run(phantom, tmp_path)
    d = result.details
    assert d["limb_count"] == 2
    assert sorted(m["letter"] for m in d["markers"]) == ["L", "R"]
    assert d["selected_side"] == "L" and d["confidence"] == "high" and d["flags"] == []
    assert _kept_left_iou(phantom, result) > 0.6
    # markers lie where they were drawn
    for m in d["markers"]:
        truth = phantom.marker_centres[phantom.marker_letters.index(m["letter"])]
        assert abs(m["x"] - truth[0]) < 10 and abs(m["y"] - truth[1]) < 10
    # the derived image is the crop of the source, the right hand's half blanked
    derived = result.derived_images[0]
    r0, c0, r1, c1 = derived.source_region
    assert derived.name == "left_hand" and derived.pixels.shape == (r1 - r0, c1 - c0)
    right = phantom.mask_of("R")
    assert right is not None
    inside = right[r0:r1, c0:c1]
    if inside.any():  # whatever of the right hand fell in the crop was blanked to one background level
        assert np.ptp(derived.pixels[inside]) == 0
    assert result.summary_image is not None and result.summary_image.shape[2] == 3
    groups = {g.tracking_id: g for g in result.groups}
    assert {"limb 1", "limb 2", "marker 1", "marker 2", "selected hand"} <= set(groups)
    assert groups["selected hand"].laterality is not None and groups["selected hand"].laterality.value == "7771000"


def test_swapped_hands_follow_the_markers(tmp_path: Path) -> None:
    markers = (MarkerSpec("R", 0, height_px=30, font=FONTS[3]), MarkerSpec("L", 1, height_px=30, mirrored=True))
    phantom = make_phantom(_two_hands(sides=("R", "L"), markers=markers))
    result = _run(phantom, tmp_path)
    assert result.details["selected_side"] == "L"
    assert _kept_left_iou(phantom, result) > 0.6


def test_one_hand(tmp_path: Path) -> None:
    spec = PhantomSpec(sides=("L",), columns=540, markers=(MarkerSpec("L", 0, height_px=32),), seed=2)
    phantom = make_phantom(spec)
    result = _run(phantom, tmp_path)
    assert result.details["limb_count"] == 1
    assert [m["letter"] for m in result.details["markers"]] == ["L"]
    assert result.details["selected_side"] == "L" and result.details["confidence"] == "high"


def test_missing_marker_falls_back_to_anatomy(tmp_path: Path) -> None:
    phantom = make_phantom(_two_hands(markers=(), sides=("R", "L")))
    result = _run(phantom, tmp_path)
    d = result.details
    assert d["markers"] == []
    assert "marker_missing" in d["flags"] and "anatomical_fallback" in d["flags"]
    assert d["confidence"] == "low"
    assert d["selected_side"] == "L" and _kept_left_iou(phantom, result) > 0.6


def test_monochrome1_and_16_bit(tmp_path: Path) -> None:
    phantom = make_phantom(_two_hands(monochrome1=True, bits_stored=16))
    assert phantom.photometric == "MONOCHROME1"
    result = _run(phantom, tmp_path)
    assert sorted(m["letter"] for m in result.details["markers"]) == ["L", "R"]
    assert _kept_left_iou(phantom, result) > 0.6
    assert result.derived_images[0].photometric == "MONOCHROME1"


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_rotated_image(tmp_path: Path, quarter_turns: int) -> None:
    phantom = make_phantom(_two_hands(rot90=quarter_turns))
    result = _run(phantom, tmp_path)
    assert result.details["limb_count"] == 2
    assert sorted(m["letter"] for m in result.details["markers"]) == ["L", "R"]
    assert _kept_left_iou(phantom, result) > 0.6


def test_rotated_without_marker_uses_the_thumb(tmp_path: Path) -> None:
    spec = PhantomSpec(sides=("L",), columns=540, rot90=1, seed=9)
    result = _run(make_phantom(spec), tmp_path)
    assert result.details["selected_side"] == "L" and "anatomical_fallback" in result.details["flags"]


def test_marker_over_soft_tissue(tmp_path: Path) -> None:
    markers = (MarkerSpec("L", 0, height_px=30, over_tissue=True), MarkerSpec("R", 1, height_px=34, over_tissue=True))
    phantom = make_phantom(_two_hands(markers=markers))
    assert phantom.marker_letters == ["L", "R"]
    result = _run(phantom, tmp_path)
    assert sorted(m["letter"] for m in result.details["markers"]) == ["L", "R"]
    assert result.details["limb_count"] == 2


def test_disagreement_with_image_laterality_is_flagged(tmp_path: Path) -> None:
    spec = PhantomSpec(sides=("L",), columns=540, markers=(MarkerSpec("L", 0, height_px=32),), seed=2)
    result = _run(make_phantom(spec), tmp_path, image_laterality="R", series_description="Hand right PA")
    flags = result.details["flags"]
    assert "marker_disagrees_with_image_laterality" in flags
    assert "marker_disagrees_with_description" in flags
    assert result.details["confidence"] == "low"


def test_png_import_round_trip(tmp_path: Path) -> None:
    phantom = make_phantom(_two_hands())
    grey = (phantom.stored.astype(np.float64) / (2**phantom.bits_stored - 1) * 255).astype(np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "hands.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    ds = wrap_image_as_secondary_capture(folder / "hands.png", patient_id="P1")
    path = tmp_path / "sc.dcm"
    ds.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)
    assert back.PhotometricInterpretation == "MONOCHROME2" and back.BitsStored == 8
    assert np.array_equal(back.pixel_array, grey)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    assert "Error" not in out.stdout + out.stderr
    assert len(load_input_folder(folder)) == 1  # (path, header) per picture
    result = HandXrayPipeline().run(PipelineInputs(series=[ImageSeries([back], [path])]), RunContext())
    assert result.details["selected_side"] == "L"
    assert _kept_left_iou(phantom, result) > 0.6


def test_accuracy_over_generated_cases(tmp_path: Path) -> None:
    scores = [score for *_, score in evaluate(100, seed=2024, work_dir=tmp_path)]
    n = len(scores)
    assert sum(s.limb_count_ok for s in scores) / n >= 0.98
    assert sum(s.markers_ok for s in scores) / n >= 0.98
    assert sum(s.selected_ok for s in scores) / n >= 0.98


def test_real_fuji_cr_with_r_marker() -> None:
    if not SHARED_CR.exists():
        pytest.skip(f"shared data not present: {SHARED_CR}")
    ds = pydicom.dcmread(SHARED_CR)
    result = HandXrayPipeline().run(PipelineInputs(series=[ImageSeries([ds], [SHARED_CR])]), RunContext())
    d = result.details
    assert d["limb_count"] == 1  # one leg; the collimator shadows are not limbs
    assert [m["letter"] for m in d["markers"]] == ["R"]
    marker = d["markers"][0]
    assert marker["x"] > d["limbs"][0]["centroid"][0]  # the R lies to the right of the leg, low in the image
    assert marker["y"] > 0.7 * ds.Rows
    assert "no_left_hand" in d["flags"]
