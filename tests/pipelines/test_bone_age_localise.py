"""The classical localisation of the 13 RUS bones: on phantoms against their true boxes, and on the ten real
infant left hands of the shared data (no true boxes there: what a reader checks by eye is checked instead:
every region on the hand, the rays in their order from the thumb, the bones of a ray from tip to wrist,
the radius on the thumb side of the ulna)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.handshape import display, hand_mask
from pipelines.bone_age.localise import Localisation, localise
from pipelines.bone_age.metrics import box_iou
from pipelines.bone_age.phantoms import HandSpec, make_hand, random_hand
from tests.conftest import shared_data

RAYS = {1: ("DP1", "PP1", "MC1"), 3: ("DP3", "MP3", "PP3", "MC3"), 5: ("DP5", "MP5", "PP5", "MC5")}


def _centre(loc: Localisation, bone: str) -> tuple[float, float]:
    x0, y0, x1, y1 = loc.regions[bone].box
    return (x0 + x1) / 2, (y0 + y1) / 2


def test_phantom_regions_match_the_truth() -> None:
    rng = np.random.default_rng(11)
    hits = {b: 0 for b in BONE_KEYS}
    cases = 8
    for _ in range(cases):
        phantom = make_hand(random_hand(rng))
        found = localise(phantom.image)
        assert found.complete, found.problems
        for bone in BONE_KEYS:
            hits[bone] += box_iou(found.regions[bone].box, phantom.boxes[bone]) >= 0.5
    overall = sum(hits.values()) / (cases * len(BONE_KEYS))
    assert overall >= 0.8, hits
    assert min(hits.values()) >= cases // 2, hits


def test_a_turned_radiograph_is_handled_by_quarter_turns() -> None:
    phantom = make_hand(HandSpec(maturity=0.6, seed=5))
    for turns in (1, 2, 3):
        turned = np.ascontiguousarray(np.rot90(phantom.image, turns))
        found = localise(turned)
        assert found.complete, (turns, found.problems)
        rows, cols = phantom.image.shape
        for bone in ("DP3", "MC1", "radius"):
            x0, y0, x1, y1 = phantom.boxes[bone]
            corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
            for _ in range(turns):  # np.rot90 (counter-clockwise): (x, y) -> (y, cols - 1 - x)
                corners = np.stack([corners[:, 1], cols - 1 - corners[:, 0]], axis=1)
                rows, cols = cols, rows
            rows, cols = phantom.image.shape
            truth = (corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max())
            assert box_iou(found.regions[bone].box, truth) >= 0.4, (turns, bone)


def _plausible(loc: Localisation, mask: np.ndarray) -> list[str]:
    """What a reader checks on a picture of the regions, as rules; the broken ones."""
    broken = []
    if not loc.complete:
        return [f"incomplete: {loc.problems}"]
    rows, cols = mask.shape
    for bone in BONE_KEYS:
        x, y = _centre(loc, bone)
        inside = 0 <= int(y) < rows and 0 <= int(x) < cols and mask[int(y), int(x)]
        if not inside:
            broken.append(f"{bone} centre off the hand")
    for ray, bones in RAYS.items():
        ys = [_centre(loc, b)[1] for b in bones]
        if ys != sorted(ys):
            broken.append(f"ray {ray} bones not in order from the tip")
    # thumb on the viewer's right (left hand, PA): ray I right of ray III right of ray V, proximal phalanges
    xs = [_centre(loc, b)[0] for b in ("PP5", "PP3", "PP1")]
    if xs != sorted(xs):
        broken.append("rays not ordered from the thumb")
    if _centre(loc, "radius")[0] <= _centre(loc, "ulna")[0]:
        broken.append("radius not on the thumb side of the ulna")
    if _centre(loc, "radius")[1] <= _centre(loc, "MC3")[1]:
        broken.append("radius not below the metacarpals")
    return broken


def test_real_infant_hands_look_right() -> None:
    folder = shared_data("hand", "radinformatics_infant")
    images = sorted(folder.glob("*.png"))
    assert len(images) == 10
    failures = {}
    for path in images:
        pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        found = localise(pixels)
        assert found.thumb_side == "right", path.name  # every one is a left hand seen PA
        broken = _plausible(found, hand_mask(display(pixels)))
        if broken:
            failures[Path(path).name] = broken
    # measured: 9 of 10 pass every rule (0.png, a chubby infant hand with the thumb against the index: its
    # radius and ulna are not found and its rays are assigned wrongly); by eye 4.png (overlapping fingers,
    # the forearm at 45 degrees) is wrong too though it passes: one failure more is tolerated
    assert len(failures) <= 2, failures


def test_real_infant_hands_do_not_depend_on_the_margin_around_the_hand() -> None:
    """hand_xray crops the hand with a margin (its hull's box plus a share of its size): the same bones must
    be found whatever background the margin leaves around the hand. A fingertip's rounded end once made the
    digit's web (where it joins the palm) be found on the distal phalanx, and ray V was traced off its bones
    on 2.png with a 4 % margin and on 3.png with 2 %."""
    folder = shared_data("hand", "radinformatics_infant")
    found_by_hand = {}
    for path in sorted(folder.glob("*.png")):
        pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        ys, xs = np.nonzero(hand_mask(display(pixels)))
        height, width = int(np.ptp(ys)), int(np.ptp(xs))
        counts = []
        for margin in (0.02, 0.05, 0.08):
            r0, c0 = max(0, int(ys.min() - margin * height)), max(0, int(xs.min() - margin * width))
            r1, c1 = int(ys.max() + 1 + margin * height), int(xs.max() + 1 + margin * width)
            counts.append(len(localise(pixels[r0:r1, c0:c1]).regions))
        found_by_hand[path.name] = counts
    assert all(len(set(counts)) == 1 for counts in found_by_hand.values()), found_by_hand
    # 0.png: its radius and ulna are not found (see above), whatever the margin
    assert sum(counts[0] == len(BONE_KEYS) for counts in found_by_hand.values()) >= 9, found_by_hand


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_inverted_storage_finds_the_same_regions(photometric: str) -> None:
    phantom = make_hand(HandSpec(maturity=0.4, seed=9))
    stored = phantom.stored(12).astype(np.float32)
    pixels = 4095 - stored if photometric == "MONOCHROME1" else stored
    found = localise(pixels, photometric)
    reference = localise(stored)
    assert found.complete
    for bone in BONE_KEYS:
        assert box_iou(found.regions[bone].box, reference.regions[bone].box) > 0.9
