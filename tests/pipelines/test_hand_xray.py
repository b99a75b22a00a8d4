"""hand_xray on phantoms with known answers (written as DX with dicomnode.testing.synthetic, read back), PNG import,
the accuracy over generated cases, and the real images of the shared data: the ten infant hands (all left,
no marker), the Fuji CR of a leg with a lead "R", a chest CR, and images without pixel spacing."""

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
    NotAssessable,
    Outcome,
    OutputKind,
    Pipeline,
    PipelineInputs,
    PipelineResult,
    RunContext,
)
from pipelines.hand_xray.accuracy import box_iou, evaluate, run_on_phantom
from pipelines.hand_xray.anatomy import read_hand
from pipelines.hand_xray.limbs import find_limbs
from pipelines.hand_xray.phantoms import FONTS, MarkerSpec, Phantom, PhantomSpec, make_phantom
from pipelines.hand_xray.pipeline import HandXrayPipeline
from pipelines.hand_xray.preprocess import prepare
from tests.conftest import shared_data


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def _two_hands(**kwargs: object) -> PhantomSpec:
    markers = (MarkerSpec("L", 0, height_mm=12), MarkerSpec("R", 1, height_mm=12, font=FONTS[2], angle_deg=20))
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
    assert [p.name for p in pipeline.provides] == ["left_hand"] and pipeline.consumes == ()


def test_two_hands_with_markers_keeps_the_left(tmp_path: Path) -> None:
    phantom = make_phantom(_two_hands())
    result = _run(phantom, tmp_path)
    d = result.details
    assert d["limb_count"] == 2
    assert sorted(m["letter"] for m in d["markers"]) == ["L", "R"]
    assert d["selected_side"] == "L" and d["confidence_label"] == "high" and d["flags"] == []
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
    assert groups["selected hand"].confidence is not None and groups["selected hand"].confidence >= 0.7
    assert all(c.scheme != "99DICOMNODE" for g in result.groups for q in g.qualitative for c in (q.name, q.value))


def test_swapped_hands_follow_the_markers(tmp_path: Path) -> None:
    markers = (MarkerSpec("R", 0, height_mm=11, font=FONTS[3]), MarkerSpec("L", 1, height_mm=11, mirrored=True))
    phantom = make_phantom(_two_hands(sides=("R", "L"), markers=markers))
    result = _run(phantom, tmp_path)
    assert result.details["selected_side"] == "L"
    assert _kept_left_iou(phantom, result) > 0.6


def test_one_hand(tmp_path: Path) -> None:
    spec = PhantomSpec(sides=("L",), columns=540, markers=(MarkerSpec("L", 0, height_mm=12),), seed=2)
    phantom = make_phantom(spec)
    result = _run(phantom, tmp_path)
    assert result.details["limb_count"] == 1
    assert [m["letter"] for m in result.details["markers"]] == ["L"]
    assert result.details["selected_side"] == "L" and result.details["confidence_label"] == "high"


def test_missing_marker_falls_back_to_anatomy(tmp_path: Path) -> None:
    phantom = make_phantom(_two_hands(markers=(), sides=("R", "L")))
    result = _run(phantom, tmp_path)
    d = result.details
    assert d["markers"] == []
    assert "marker_missing" in d["flags"] and "anatomical_fallback" in d["flags"]
    assert d["confidence_label"] == "low"
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
    markers = (MarkerSpec("L", 0, height_mm=11, over_tissue=True), MarkerSpec("R", 1, height_mm=12, over_tissue=True))
    phantom = make_phantom(_two_hands(markers=markers))
    assert phantom.marker_letters == ["L", "R"]
    result = _run(phantom, tmp_path)
    assert sorted(m["letter"] for m in result.details["markers"]) == ["L", "R"]
    assert result.details["limb_count"] == 2


def test_disagreement_with_image_laterality_is_flagged(tmp_path: Path) -> None:
    spec = PhantomSpec(sides=("L",), columns=540, markers=(MarkerSpec("L", 0, height_mm=12),), seed=2)
    result = _run(make_phantom(spec), tmp_path, image_laterality="R", series_description="Hand right PA")
    flags = result.details["flags"]
    assert "marker_disagrees_with_image_laterality" in flags
    assert "marker_disagrees_with_description" in flags
    assert result.details["confidence_label"] == "low"


def test_png_import_round_trip(tmp_path: Path) -> None:
    phantom = make_phantom(_two_hands())
    grey = (phantom.stored.astype(np.float64) / (2**phantom.bits_stored - 1) * 255).astype(np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "hands.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    ds = wrap_image_as_secondary_capture(folder / "hands.png", patient_id="P1")
    path = tmp_path / "sc.dcm"
    ds.save_as(path, enforce_file_format=True)  # a PNG carries no pixel spacing
    back = pydicom.dcmread(path)
    assert back.PhotometricInterpretation == "MONOCHROME2" and back.BitsStored == 8
    assert np.array_equal(back.pixel_array, grey)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    assert "Error" not in out.stdout + out.stderr
    assert len(load_input_folder(folder)) == 1
    result = HandXrayPipeline().run(PipelineInputs(series=[ImageSeries([back], [path])]), RunContext())
    assert result.details["selected_side"] == "L"
    assert _kept_left_iou(phantom, result) > 0.6
    # without spacing: sizes in stated pixels, the flag says so, no mm anywhere
    assert result.details["pixel_spacing_mm"] is None and "pixel_spacing_unknown" in result.details["flags"]
    areas = [m for g in result.groups for m in g.measurements if m.name.meaning == "Area"]
    assert areas and all(m.unit.value == "{pixels}" for m in areas)
    assert result.derived_images[0].pixel_spacing_mm is None


def test_accuracy_over_generated_cases(tmp_path: Path) -> None:
    scores = [score for *_, score in evaluate(40, seed=2024, work_dir=tmp_path)]
    n = len(scores)
    assert sum(s.limb_count_ok for s in scores) / n >= 0.98
    assert sum(s.markers_ok for s in scores) / n >= 0.95
    assert sum(s.selected_ok for s in scores) / n >= 0.98


# ---------------------------------------------------------------- what real radiographs do to a hand reader
def test_thin_stroke_letters_at_real_size_on_a_large_image(tmp_path: Path) -> None:
    """A 10 mm letter with 1 mm strokes on a 2400 x 2000 image at 0.1 mm: a 1024 working image would leave
    its foot 2-3 pixels wide."""
    markers = (MarkerSpec("L", 0, height_mm=10, thin=True), MarkerSpec("R", 1, height_mm=9, thin=True, font=FONTS[4]))
    spec = PhantomSpec(sides=("L", "R"), markers=markers, rows=2000, columns=2400, mm_per_px=0.1, seed=8)
    phantom = make_phantom(spec)
    assert phantom.marker_letters == ["L", "R"]
    result = _run(phantom, tmp_path)
    d = result.details
    assert sorted(m["letter"] for m in d["markers"]) == ["L", "R"]
    for m in d["markers"]:
        truth = phantom.marker_centres[phantom.marker_letters.index(m["letter"])]
        assert abs(m["x"] - truth[0]) < 30 and abs(m["y"] - truth[1]) < 30
        assert 5.0 <= m["height_mm"] <= 15.0  # glyph boxes of Hershey fonts are smaller than the nominal size
    assert d["selected_side"] == "L" and _kept_left_iou(phantom, result) > 0.6


def test_no_marker_invented_on_dense_bone_or_text(tmp_path: Path) -> None:
    """Bright carpals and epiphyses, and a burned-in text line with a mirrored S: none is a lead letter."""
    for k, options in enumerate(
        ({"dense_bones": True}, {"text": "PA 12/03/21 LT"}, {"dense_bones": True, "text": "HAND 2"})
    ):
        spec = PhantomSpec(sides=("R", "L"), markers=(), seed=20 + k, **options)  # type: ignore[arg-type]
        result = _run(make_phantom(spec), tmp_path / str(k))
        assert result.details["markers"] == [], (options, result.details["markers"])
        assert result.details["selected_side"] == "L"  # from the thumbs
    marked = PhantomSpec(sides=("L", "R"), markers=_two_hands().markers, seed=5, dense_bones=True, text="PA L")
    result = _run(make_phantom(marked), tmp_path / "marked")
    assert sorted(m["letter"] for m in result.details["markers"]) == ["L", "R"]
    assert any("text line" in r["reason"] for r in result.details["rejected_markers"])


def test_every_finger_inside_the_crop(tmp_path: Path) -> None:
    """The fingertips' soft tissue is faint (thin tissue); the crop still holds all of it."""
    for k, spec in enumerate(
        (
            _two_hands(),
            PhantomSpec(sides=("L",), columns=540, seed=4),
            PhantomSpec(sides=("L",), anatomy="infant", seed=6),
        )
    ):
        phantom = make_phantom(spec)
        result = _run(phantom, tmp_path / str(k))
        left = phantom.mask_of("L")
        assert left is not None and phantom.fingertips is not None
        r0, c0, r1, c1 = result.details["crop_region"]
        inside = np.zeros_like(left)
        inside[r0:r1, c0:c1] = True
        assert (left & ~inside).sum() == 0, f"case {k}: {(left & ~inside).sum()} px of the hand outside the crop"
        assert (phantom.fingertips & left).any()


@pytest.mark.parametrize("anatomy", ["leg", "chest"])
def test_a_leg_or_a_chest_labelled_hand_is_refused(tmp_path: Path, anatomy: str) -> None:
    markers = (MarkerSpec("R", 0, height_mm=12),) if anatomy == "leg" else ()
    spec = PhantomSpec(sides=("R",), markers=markers, anatomy=anatomy, columns=600, seed=3)
    result = _run(make_phantom(spec), tmp_path)
    assert result.outcome is Outcome.NOT_ASSESSABLE
    assert result.not_assessable_reason == NotAssessable.WRONG_ANATOMY
    assert "does not show a hand" in result.text
    assert not result.derived_images and not any(g.measurements for g in result.groups)
    assert result.summary_image is not None
    if anatomy == "leg":  # what was seen is still reported: the marker
        assert [m["letter"] for m in result.details["markers"]] == ["R"]


def test_infant_hand_phantom_is_read_as_left_and_mirrored_as_right(tmp_path: Path) -> None:
    for side in ("L", "R"):
        result = _run(make_phantom(PhantomSpec(sides=(side,), anatomy="infant", columns=540, seed=9)), tmp_path / side)
        assert result.details["limbs"][0]["is_hand"] and result.details["limbs"][0]["thumb_side"] == side


def _infant_files() -> list[Path]:
    folder = shared_data("hand", "radinformatics_infant")
    files = sorted(folder.glob("*.png"))
    assert len(files) == 10
    return files


def test_real_infant_hands_are_kept_as_left() -> None:
    """Ten real infant and toddler LEFT hands (PNG, no marker, no spacing): all kept as left, from the thumb;
    the same images mirrored are right hands."""
    pipeline = HandXrayPipeline()
    for path in _infant_files():
        ds = wrap_image_as_secondary_capture(path)
        result = pipeline.run(PipelineInputs(series=[ImageSeries([ds])]), RunContext())
        d = result.details
        assert d["selected_side"] == "L", (path.name, result.text)
        assert d["limbs"][0]["source"] == "anatomy" and d["markers"] == []
        assert d["confidence_label"] == "low"  # no marker: never "high"
        mirrored = np.ascontiguousarray(ImageSeries([ds]).frames()[0][:, ::-1])  # the thumb reading alone
        limb = find_limbs(prepare(mirrored, ds).foreground).limbs[0]
        assert read_hand(limb.mask).thumb.side == "R", path.name


def test_real_leg_cr_with_lead_r_is_refused_and_its_marker_read() -> None:
    path = shared_data("conformance", "pydicom_data", "RG3_J2KR.dcm")
    ds = pydicom.dcmread(path)
    result = HandXrayPipeline().run(PipelineInputs(series=[ImageSeries([ds], [path])]), RunContext())
    assert result.not_assessable_reason == NotAssessable.WRONG_ANATOMY
    markers = result.details["markers"]
    assert [m["letter"] for m in markers] == ["R"]
    marker = markers[0]
    leg = result.details["limbs"][0]["box"]
    assert marker["x"] > leg[2] - 0.1 * ds.Columns and marker["y"] > 0.7 * ds.Rows  # right of the leg, low
    assert [g.tracking_id for g in result.groups] == ["limb 1", "marker 1"]


def test_real_chest_and_tiny_images_are_refused() -> None:
    pipeline = HandXrayPipeline()
    chest = shared_data("conformance", "pydicom_data", "RG1_J2KI.dcm")
    result = pipeline.run(PipelineInputs(series=[ImageSeries([pydicom.dcmread(chest)], [chest])]), RunContext())
    assert result.not_assessable_reason == NotAssessable.WRONG_ANATOMY and result.details["markers"] == []
    tiny = shared_data("conformance", "pydicom_test_files", "dicomdirtests", "77654033", "CR1", "6154")
    result = pipeline.run(PipelineInputs(series=[ImageSeries([pydicom.dcmread(tiny)], [tiny])]), RunContext())
    assert result.not_assessable_reason == NotAssessable.INSUFFICIENT_QUALITY
