"""cardiac_lv end to end on cine phantoms written as real DICOM (classic single-frame, one enhanced
multi-frame instance, one series per position): indices against the analytic truth, phase, ED/ES, the label
map on the source frames, stack volumes, and the inputs it must refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.errors import ValidationError
from dicomnode.plugins.api import ImageSeries, NotAssessable, Outcome, PipelineInputs, ProducedBy, RunContext
from dicomnode.testing.cine import CineLayout, write_cine
from pipelines.cardiac_lv import codes
from pipelines.cardiac_lv.geometry import RWT_ORDER
from pipelines.cardiac_lv.metrics import ANCHORS, dice, index_metrics
from pipelines.cardiac_lv.phantoms import PhantomSpec, make_cine, make_stack
from pipelines.cardiac_lv.pipeline import CardiacLvPipeline

# A heart off-centre, end-diastole late in the cine (systole wraps round), the ellipse tilted, walls unequal.
SPEC = PhantomSpec(
    centre_offset_mm=(14.0, -12.0),
    ed_frame=14,
    ellipse_angle_deg=120.0,
    semi_axes_ed_mm=(28.0, 22.0),
    wall_mm=(10.0, 7.0, 6.0, 8.5, 11.0, 9.0),
    seed=11,
)


# The oblique short-axis plane of the Sunnybrook cines (orthonormal, as a scanner writes it).
OBLIQUE = {"row_direction": (-0.104592, 0.346381, -0.932245), "column_direction": (-0.733192, -0.660188, -0.163037)}


def _write(images: np.ndarray, folder: Path, spacing: float = 1.5, **kwargs: object) -> list[Path]:
    stack = images if images.ndim == 4 else images[np.newaxis]
    return write_cine(stack, folder, pixel_spacing=(spacing, spacing), slice_spacing=10.0, **OBLIQUE, **kwargs)


def _series(paths: list[Path]) -> ImageSeries:
    return ImageSeries([pydicom.dcmread(p, stop_before_pixels=True) for p in paths], paths)


def _by_series(paths: list[Path]) -> list[ImageSeries]:
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID), []).append(path)
    return [_series(p) for p in groups.values()]


def _run(series: list[ImageSeries], **params: object):
    return CardiacLvPipeline().run(PipelineInputs(series), RunContext(params=params))


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    phantom = make_cine(SPEC)
    series = _series(_write(phantom.images, tmp_path_factory.mktemp("classic")))
    return phantom, series, _run([series])


def test_indices_are_well_within_the_lvquan18_winners_errors(classic):
    phantom, _, result = classic
    assert result.outcome is Outcome.ASSESSED and result.overall_produced_by is ProducedBy.CLASSICAL
    mae = index_metrics(np.array(result.details["indices"]), phantom.indices)["mae"]
    print(f"phantom MAE: {mae} (LVQuan18 winner {ANCHORS})")
    assert mae["areas_mm2"] < ANCHORS["areas_mm2"] / 3
    assert mae["dimensions_mm"] < ANCHORS["dimensions_mm"] / 2
    assert mae["rwt_mm"] < ANCHORS["rwt_mm"] / 2


def test_phase_and_key_frames_follow_the_cavity_curve(classic):
    phantom, _, result = classic
    phase = result.details["phase"]
    errors = np.mean(np.array(phase["labels"]) != phantom.phase)
    assert errors <= 0.05 < ANCHORS["phase_error_rate"]
    assert abs(phase["ed_frame"] - phantom.ed_frame) <= 1
    assert abs(phase["es_frame"] - phantom.es_frame) <= 1


def test_papillary_muscles_pressed_into_the_wall_at_end_systole_belong_to_the_cavity(tmp_path):
    # What the Sunnybrook cines showed (SCD0000101 at ES): in systole two papillary muscles lie flat against
    # the wall over 90° with no blood behind them; the truth (LVQuan, Sunnybrook) draws the endocardium
    # behind them. Before the ring-area constraint the ES cavity came out 4 % short and the inferior wall
    # (a muscle at 170°) 0.9 mm too thick.
    phantom = make_cine(PhantomSpec(seed=1, papillary_arc_deg=90.0, papillary_mm=5.0))
    result = _run([_series(_write(phantom.images, tmp_path))])
    ours, truth = np.array(result.details["indices"]), phantom.indices
    es, ed = phantom.es_frame, phantom.ed_frame
    inferior = 5 + RWT_ORDER.index("I")
    print(f"ES cavity {ours[es, 0]:.0f} / {truth[es, 0]:.0f} mm2, ED {ours[ed, 0]:.0f} / {truth[ed, 0]:.0f} mm2, "
          f"RWT I at ES {ours[es, inferior]:.2f} / {truth[es, inferior]:.2f} mm")  # fmt: skip
    assert ours[es, 0] == pytest.approx(truth[es, 0], rel=0.03)
    assert ours[ed, 0] == pytest.approx(truth[ed, 0], rel=0.03)
    assert abs(ours[es, inferior] - truth[es, inferior]) < 0.5


def _frame_of(series: ImageSeries) -> dict[str, float]:
    return {str(ds.SOPInstanceUID): float(ds.TriggerTime) for ds in series.datasets}


def test_each_frame_reports_its_indices_and_phase_on_its_own_source_frame(classic):
    _, series, result = classic
    trigger = _frame_of(series)
    frame_groups = [g for g in result.groups if " frame " in g.tracking_id]
    assert len(frame_groups) == 20
    times = []
    for t, group in enumerate(frame_groups):
        sources = {m.source for m in group.measurements}
        assert len(sources) == 1 and len(group.measurements) == 11
        times.append(trigger[next(iter(sources)).sop_instance_uid])
        phase = next(q.value for q in group.qualitative if q.name == codes.CARDIAC_PHASE)
        assert phase == (codes.SYSTOLE if result.details["phase"]["labels"][t] else codes.DIASTOLE)
        assert {m.unit for m in group.measurements} == {codes.MM, codes.MM2}
    assert times == sorted(times)  # instance numbers are out of time order: frames come back by trigger time
    key = {q.value for g in frame_groups for q in g.qualitative if q.name == codes.KEY_FRAME}
    assert key == {codes.END_DIASTOLE, codes.END_SYSTOLE}
    function = next(g for g in result.groups if g.tracking_id.startswith("LV function"))
    fac = next(m.value for m in function.measurements if m.name == codes.FRACTIONAL_AREA_CHANGE)
    ed, es = result.details["phase"]["ed_frame"], result.details["phase"]["es_frame"]
    areas = [row[0] for row in result.details["indices"]]
    assert fac == pytest.approx(100 * (areas[ed] - areas[es]) / areas[ed])


def test_label_map_outlines_cavity_and_myocardium_on_the_source_frames(classic):
    phantom, series, result = classic
    (label_map,) = result.label_maps
    assert label_map.array.shape == (20, *phantom.images.shape[1:])
    trigger = _frame_of(series)
    order = np.argsort([trigger[s.sop_instance_uid] for s in label_map.sources])
    assert order.tolist() == list(range(20))
    cavity_dice = [dice(label_map.array[t] == 1, phantom.cavity[t]) for t in range(20)]
    myo_dice = [dice(label_map.array[t] == 2, phantom.myocardium[t]) for t in range(20)]
    assert min(cavity_dice) > 0.92 and min(myo_dice) > 0.8
    assert np.mean(myo_dice) > 0.88


def test_summary_image_is_a_readable_rgb_picture(classic):
    _, _, result = classic
    image = result.summary_image
    assert image is not None and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 900 and image.shape[1] >= 600
    # The two frame panels show the cavity overlay's orange.
    orange = np.all(np.abs(image[:460].astype(int) - (230, 159, 0)) < 40, axis=2)
    assert orange.sum() > 500


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = PhantomSpec(shape=(112, 112), spacing_mm=1.6, n_frames=16, ed_frame=3, seed=5)
    phantom = make_stack(6, 10.0, base, beyond_apex=1)
    paths = _write(phantom.images, tmp_path_factory.mktemp("enhanced"), 1.6, layout=CineLayout.ENHANCED)
    assert len(paths) == 1
    return phantom, _series(paths)


def test_enhanced_stack_gives_simpson_volumes_and_ejection_fraction(stack):
    phantom, series = stack
    result = _run([series], analyse_all_positions=True)
    volumes = result.details["volumes"]
    print(f"EDV {volumes['edv_ml']} / {phantom.edv_ml:.1f}, ESV {volumes['esv_ml']} / {phantom.esv_ml:.1f}, "
          f"EF {volumes['ef_percent']} / {phantom.ef_percent:.1f}")  # fmt: skip
    assert volumes["edv_ml"] == pytest.approx(phantom.edv_ml, rel=0.06)
    assert volumes["esv_ml"] == pytest.approx(phantom.esv_ml, rel=0.08)
    assert abs(volumes["ef_percent"] - phantom.ef_percent) < 4.0
    assert volumes["positions"] == [0, 1, 2, 3, 4]  # the position beyond the apex holds no LV
    group = next(g for g in result.groups if g.tracking_id.startswith("LV volumes"))
    assert {m.name for m in group.measurements} >= {codes.EDV, codes.ESV, codes.EJECTION_FRACTION}
    (label_map,) = result.label_maps
    per_position = label_map.array.reshape(6, 16, *label_map.array.shape[1:])
    assert all((per_position[p] == 1).any() for p in range(5)) and not per_position[5].any()


def test_mid_ventricular_position_is_the_middle_of_the_ringed_positions(stack):
    phantom, series = stack
    result = _run([series])
    assert result.details["mid_position"] == phantom.mid_position == 2
    assert "volumes" not in result.details
    assert not any(g.tracking_id.startswith("LV volumes") for g in result.groups)
    truth = phantom.positions[2]
    assert truth is not None
    mae = index_metrics(np.array(result.details["indices"]), truth.indices)["mae"]
    assert mae["areas_mm2"] < ANCHORS["areas_mm2"] / 3 and mae["rwt_mm"] < ANCHORS["rwt_mm"] / 2


def test_one_series_per_position_is_one_stack(tmp_path):
    base = PhantomSpec(shape=(96, 96), spacing_mm=1.8, n_frames=12, seed=8)
    phantom = make_stack(3, 10.0, base, beyond_apex=0)
    paths = _write(phantom.images, tmp_path, 1.8, layout=CineLayout.SERIES_PER_POSITION)
    series = _by_series(paths)
    assert len(series) == 3
    result = _run(series)
    assert result.details["positions"] == 3 and result.details["mid_position"] == 1
    uids = {m.source.series_instance_uid for g in result.groups for m in g.measurements if m.source is not None}
    middle = next(s for s in series if s.first.SeriesDescription.endswith("slice 2"))
    assert uids == {middle.series_instance_uid}


def test_unknown_pixel_spacing_measures_in_pixels(tmp_path):
    phantom = make_cine(SPEC.replace(n_frames=12, seed=4))
    paths = _write(phantom.images, tmp_path)
    for path in paths:  # a header without any pixel spacing
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path)
    result = _run([_series(paths)])
    assert result.details["units"] == {"length": "px", "area": "px2"}
    px = phantom.spacing_mm
    truth = phantom.indices.copy()
    truth[:, :2] /= px * px
    truth[:, 2:] /= px
    mae = index_metrics(np.array(result.details["indices"]), truth)["mae"]
    assert mae["areas_mm2"] < 60.0 and mae["rwt_mm"] < 0.7  # px² and px here
    units = {m.unit for g in result.groups for m in g.measurements}
    assert units <= {codes.PX, codes.PX2, codes.PERCENT, codes.MS}


def test_too_few_frames_is_not_assessable(tmp_path):
    phantom = make_cine(SPEC.replace(n_frames=6, ed_frame=0))
    result = _run([_series(_write(phantom.images, tmp_path))])
    assert result.outcome is Outcome.NOT_ASSESSABLE
    assert result.not_assessable_reason == NotAssessable.TOO_FEW_FRAMES
    assert not result.label_maps and not any(g.measurements for g in result.groups)


def test_a_cine_without_a_ventricle_is_not_assessable(tmp_path):
    # Beyond the apex: body, lungs and liver with noise, no blood pool with a ring.
    phantom = make_stack(2, 10.0, PhantomSpec(shape=(96, 96), n_frames=12), beyond_apex=2)
    result = _run([_series(_write(phantom.images[:1], tmp_path))])
    assert result.outcome is Outcome.NOT_ASSESSABLE and result.not_assessable_reason == codes.NO_LV_FOUND
    assert "no left-ventricle blood pool" in result.text


def test_another_body_part_is_not_assessable(tmp_path):
    phantom = make_cine(SPEC.replace(n_frames=12))
    series = _series(_write(phantom.images, tmp_path))
    series.body_part = "KNEE"
    result = _run([series])
    assert result.outcome is Outcome.NOT_ASSESSABLE and result.not_assessable_reason == NotAssessable.WRONG_ANATOMY


def test_bad_parameters_are_one_clear_error(classic):
    _, series, _ = classic
    with pytest.raises(ValidationError, match="polynomial_degree"):
        _run([series], polynomial_degree=1)
    with pytest.raises(ValidationError, match="analyse_all_positions"):
        _run([series], analyse_all_positions="maybe")
