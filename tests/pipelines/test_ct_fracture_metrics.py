"""ct_fracture's measures on cases with known answers: the RibFrac FROC, 3D box IoU and NMS, the component
clean-up's two thresholds, hole filling that leaves deep holes open, and the morphology the fast paths rely on."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.ct_fracture import morphology as morph
from pipelines.ct_fracture.cleanup import CleanupParams, clean_components
from pipelines.ct_fracture.fcos import box_iou, level_targets, locations, nms_3d
from pipelines.ct_fracture.froc import ScanResult, froc, sensitivity_at


def test_froc_on_a_case_worked_by_hand():
    # scan A: fractures a1, a2; predictions 0.9 hits a1 (IoU 0.5), 0.8 hits nothing, 0.3 hits a2 (IoU 0.3),
    # 0.85 hits a1 again (a duplicate: neither a hit nor a false positive).
    # scan B: fracture b1; predictions 0.6 hits nothing, 0.2 hits b1 (IoU 0.25), 0.5 touches b1 (IoU 0.1: a FP).
    a = ScanResult(np.array([[0.5, 0.0], [0.1, 0.0], [0.0, 0.3], [0.4, 0.0]]), np.array([0.9, 0.8, 0.3, 0.85]))
    b = ScanResult(np.array([[0.0], [0.25], [0.1]]), np.array([0.6, 0.2, 0.5]))
    report = froc([a, b])
    # operating points by threshold: >0.9 none; (0.85,0.9]: 1 hit 0 FP; (0.8,0.85]: same;
    # (0.6,0.8]: 1 hit, 1 FP -> 0.5 FP/scan; (0.5,0.6]: 1 hit, 2 FP -> 1.0; (0.3,0.5]: 1 hit, 3 FP -> 1.5;
    # (0.2,0.3]: 2 hits, 3 FP; <=0.2: 3 hits, 3 FP -> 1.5 FP/scan at sensitivity 1.
    assert report["sensitivity_at_fp"] == {
        "0.5": pytest.approx(1 / 3, abs=1e-4),
        "1": pytest.approx(1 / 3, abs=1e-4),
        "2": 1.0,
        "4": 1.0,
        "8": 1.0,
    }
    assert report["froc"] == pytest.approx((1 / 3 + 1 / 3 + 3) / 5)
    assert report["max_sensitivity"] == 1.0 and report["fp_per_scan_at_max_sensitivity"] == 1.5
    assert report["fractures"] == 3 and report["scans"] == 2


def test_froc_interpolates_between_operating_points_and_is_zero_below_them():
    assert sensitivity_at([2.0, 0.0], [0.8, 0.4], 1.0) == pytest.approx(0.6)
    assert sensitivity_at([3.0, 1.0], [0.9, 0.5], 0.5) == 0.0  # never this few false positives
    assert sensitivity_at([3.0, 1.0], [0.9, 0.5], 8.0) == 0.9


def test_froc_with_no_detections_is_zero_and_a_perfect_detector_is_one():
    empty = ScanResult(np.zeros((0, 2)), np.zeros(0))
    assert froc([empty])["froc"] == 0.0
    perfect = ScanResult(np.array([[0.9, 0.0], [0.0, 0.7]]), np.array([0.95, 0.9]))
    assert froc([perfect])["froc"] == 1.0


def test_box_iou_and_nms():
    boxes = np.array([[0, 0, 0, 10, 10, 10], [0, 0, 5, 10, 10, 15], [20, 20, 20, 24, 24, 24]], dtype=float)
    iou = box_iou(boxes, boxes)
    assert iou[0, 1] == pytest.approx(500 / 1500) and iou[0, 2] == 0.0 and iou[2, 2] == 1.0
    keep = nms_3d(boxes, np.array([0.5, 0.9, 0.4]), iou_threshold=0.3)
    assert keep.tolist() == [1, 2]


def test_centre_radius_keeps_only_the_cells_near_a_box_centre():
    box = np.array([[40.0, 89.0, 204.0, 48.0, 102.0, 217.0]])  # the phantom gap's 8 x 13 x 13 voxel box
    points = locations((20, 40, 60), 4)
    wide, _, _ = level_targets(points, box, 4, (0.0, 12.0))
    narrow, dist, ctr = level_targets(points, box, 4, (0.0, 12.0), centre_radius=0.75)
    centre = (box[0, :3] + box[0, 3:]) / 2
    assert 0 < narrow.sum() < wide.sum()
    assert np.all(np.abs(points[narrow > 0] - centre) <= 3.0)  # 0.75 strides of 4 voxels
    assert np.all(dist[narrow > 0] > 0) and np.all((ctr[narrow > 0] > 0) & (ctr[narrow > 0] <= 1))


def test_hu_window_clips_the_normalised_input_and_its_padding():
    from pipelines.ct_fracture.inference import hu_window, normalise

    hu = np.array([-1000.0, -850.0, 40.0, 1000.0, 4000.0], dtype=np.float32)
    x = normalise(hu)
    assert np.allclose(hu_window(x, (-100.0, 1500.0)), [-0.1, -0.1, 0.04, 1.0, 1.5])
    assert np.allclose(hu_window(np.full(3, -1.0, np.float32), (-100.0, 1500.0)), -0.1)  # air padding too
    assert hu_window(x, None) is x


def test_cleanup_drops_small_and_isolated_components_but_keeps_large_isolated_bone():
    spacing = (1.0, 1.0, 1.0)
    mask = np.zeros((40, 80, 120), dtype=bool)
    mask[5:35, 10:20, 10:20] = True  # 3 mL: a bone
    mask[5:35, 10:20, 24:34] = True  # 3 mL, 4 mm away: a neighbour
    mask[20:22, 40:42, 15:17] = True  # 0.008 mL: a speck (too small)
    mask[10:20, 50:60, 50:60] = True  # 1 mL, 30 mm from everything: isolated
    mask[0:40, 40:75, 95:118] = True  # 32 mL, far from everything, but large: kept
    result = clean_components(mask, spacing, CleanupParams(min_volume_ml=0.05, max_gap_mm=15.0, keep_isolated_ml=15.0))
    kept = result.labels > 0
    assert result.count == 3 and result.dropped_small == 1 and result.dropped_isolated == 1
    assert kept[20, 15, 15] and kept[20, 15, 30] and kept[20, 60, 100]
    assert not kept[21, 41, 16] and not kept[15, 55, 55]
    assert result.labels[20, 60, 100] == 1  # labelled largest first


def test_hole_filling_fills_marrow_and_leaves_deep_or_large_holes_open():
    mask = np.zeros((1, 100, 200), dtype=bool)
    yy, xx = np.mgrid[:100, :200]
    ring = lambda cy, cx, r: (np.hypot(yy - cy, xx - cx) <= r) & (np.hypot(yy - cy, xx - cx) > r - 2)  # noqa: E731
    mask[0] = ring(50, 40, 10) | ring(50, 140, 40)
    filled = morph.fill_holes_split(mask, max_depth_px=16.0)[0]
    assert filled[0, 50, 40]  # a 10 px marrow cavity
    assert not filled[0, 50, 140]  # 38 px deep: the space ribs and spine enclose, not marrow
    assert not morph.fill_holes_2d(mask, max_hole_px=100)[0, 50, 40]


@pytest.mark.parametrize("radius", [(0, 3, 3), (2, 5, 3), (4, 9, 9)])
def test_box_dilation_holds_the_elliptic_one(radius):
    # the rib-fragment pre-test skips a piece whose box-dilated ribs it misses: sound only if the box dilation
    # reaches every voxel the elliptic (cylinder) dilation reaches
    mask = np.random.default_rng(sum(radius)).random((20, 60, 70)) > 0.998
    elliptic, box = morph.dilate(mask, radius), morph.dilate_box(mask, radius)
    assert elliptic.sum() > mask.sum() and not (elliptic & ~box).any()
    assert (box & ~elliptic).any()  # the box's corners: a superset, not the same


def test_labelling_counts_the_components():
    mask = np.zeros((10, 30, 30), dtype=bool)
    mask[1:3, 1:3, 1:3] = mask[5:8, 10:20, 10:12] = mask[9, 29, 29] = True
    mask[3, 3, 3] = True  # touches the first cube by a corner: 26-connected, one component with it
    labels, count = morph.label(mask)
    assert count == 3 and labels.max() == 3 and set(np.unique(labels[mask])) == {1, 2, 3}
    assert morph.label(mask, full_connectivity=False)[1] == 4
