"""The summary-picture primitives: text that reads on bone and on air, legend, scale bar, orientation letters,
overlays, and the legibility check that tests of a pipeline's summary picture use."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dicomnode.plugins import drawing
from dicomnode.plugins.drawing import (
    PALETTE,
    DrawnText,
    contrast_ratio,
    draw_legend,
    draw_orientation,
    draw_scale_bar,
    draw_text,
    legibility_problems,
    orientation_letters,
    overlay_labels,
    recording,
    segment_colour,
    text_panel,
)


def _half_bone_half_air(rows: int = 240, cols: int = 480) -> np.ndarray:
    image = np.zeros((rows, cols, 3), dtype=np.uint8)
    image[:, : cols // 2] = 235  # cortical bone at a bone window: nearly white
    return image


def test_contrast_ratio_spans_wcag_range() -> None:
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0, abs=0.01)
    assert contrast_ratio((120, 30, 200), (120, 30, 200)) == pytest.approx(1.0)
    # WCAG's own example pair: #777777 on white is just under the 4.5:1 minimum.
    assert 4.4 < contrast_ratio((0x77, 0x77, 0x77), (255, 255, 255)) < 4.5


def test_outlined_text_reads_on_bone_and_on_air() -> None:
    image = _half_bone_half_air()
    with recording() as drawn:
        draw_text(image, "Lesion 1: 12 mm", (10, 60), scale=0.7)  # on bone
        draw_text(image, "Lesion 2: 8 mm", (250, 60), scale=0.7)  # on air
        draw_text(image, "boxed", (10, 150), scale=0.7, boxed=True)
    assert [t.text for t in drawn.texts] == ["Lesion 1: 12 mm", "Lesion 2: 8 mm", "boxed"]
    assert legibility_problems(image, drawn) == []


def test_plain_white_text_on_bone_is_reported() -> None:
    # What the outline is for: the same text without it is flagged on bone, not on air.
    image = _half_bone_half_air()
    on_bone = DrawnText("Lesion 1", (10, 60), 0.7, 1, (255, 255, 255))
    on_air = DrawnText("Lesion 2", (250, 60), 0.7, 1, (255, 255, 255))
    for item in (on_bone, on_air):
        cv2.putText(image, item.text, item.origin, cv2.FONT_HERSHEY_SIMPLEX, item.scale, (255, 255, 255), 1)
    problems = legibility_problems(image, drawing.Drawn(texts=[on_bone, on_air]))
    assert len(problems) == 1 and problems[0].startswith("'Lesion 1' has contrast")


def test_overlay_painted_over_text_afterwards_is_reported() -> None:
    # The check looks at the finished picture: a bright overlay drawn over a label hides it.
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    with recording() as drawn:
        draw_text(image, "Sphere 1", (20, 100), scale=0.8)
    labels = np.zeros((200, 300), dtype=np.uint8)
    labels[60:120, 10:200] = 1
    covered = overlay_labels(image, labels, {1: (255, 255, 255)}, alpha=0.95, outline=False)
    assert legibility_problems(image, drawn) == []
    assert any("contrast" in p for p in legibility_problems(covered, drawn))


def test_text_cut_by_the_border_too_small_or_overlapping_is_reported() -> None:
    image = np.zeros((120, 200, 3), dtype=np.uint8)
    with recording() as drawn:
        draw_text(image, "cut off at the right", (150, 50), scale=0.6)
        draw_text(image, "tiny", (10, 100), scale=0.2)
        draw_text(image, "A", (10, 30), scale=0.6)
        draw_text(image, "B", (14, 32), scale=0.6)
    problems = legibility_problems(image, drawn)
    assert any("cut by the border" in p for p in problems)
    assert any("'tiny'" in p and "too small" in p for p in problems)
    assert any("'A' overlaps 'B'" in p for p in problems)


def test_legend_lists_its_entries_with_their_swatches() -> None:
    image = np.full((300, 600, 3), 128, dtype=np.uint8)
    entries = [("1 Left lung nodule", segment_colour(1)), ("2 Right lung nodule", segment_colour(2))]
    with recording() as drawn:
        draw_legend(image, entries, corner="top-right")
    assert drawn.legend == entries
    assert drawn.of_kind("legend") == [label for label, _ in entries]
    for _, colour in entries:
        swatch = np.all(image == np.asarray(colour, dtype=np.uint8), axis=2)
        assert swatch.sum() > 50, f"no swatch of {colour}"
        assert swatch.nonzero()[1].min() > 300, "the swatches are in the right half (top-right corner)"
    assert legibility_problems(image, drawn) == []


def test_scale_bar_is_as_long_as_its_label_says() -> None:
    image = np.zeros((300, 500, 3), dtype=np.uint8)
    with recording() as drawn:
        draw_scale_bar(image, mm_per_pixel=0.5)
    assert drawn.of_kind("scale bar") == ["5 cm"]
    bar_row = image[300 - 14]
    white = np.nonzero(np.all(bar_row == 255, axis=1))[0]
    # 5 cm at 0.5 mm per pixel is 100 pixels between the end ticks.
    assert white.max() - white.min() == pytest.approx(100, abs=3)
    assert legibility_problems(image, drawn) == []


def test_scale_bar_without_pixel_spacing_says_so() -> None:
    image = np.zeros((300, 500, 3), dtype=np.uint8)
    with recording() as drawn:
        draw_scale_bar(image, mm_per_pixel=None)
    assert drawn.of_kind("scale bar") == ["100 px (spacing unknown)"]


def test_orientation_letters_of_an_axial_slice_sit_on_their_edges() -> None:
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    with recording() as drawn:
        # Axial CT: +column runs to the patient's left, +row to posterior.
        draw_orientation(image, right_of_image=(1, 0, 0), down_of_image=(0, 1, 0))
    placed = {t.text: t.origin for t in drawn.texts if t.kind == "orientation"}
    assert set(placed) == {"R", "L", "A", "P"}
    assert placed["R"][0] < 64 and placed["L"][0] > 192
    assert placed["A"][1] < 64 and placed["P"][1] > 192
    assert legibility_problems(image, drawn) == []


def test_orientation_letters_of_oblique_and_coronal_directions() -> None:
    assert orientation_letters((0.8, 0.6, 0.0)) == "LP"
    assert orientation_letters((0.0, 0.0, -1.0)) == "F"
    assert orientation_letters((-1.0, 0.1, 0.0)) == "R"


def test_overlay_tints_the_label_and_leaves_the_rest() -> None:
    grey = np.full((64, 64, 3), 100, dtype=np.uint8)
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[20:40, 20:40] = 2
    colour = segment_colour(2)
    out = overlay_labels(grey, labels, {2: colour}, alpha=0.5)
    inside = out[30, 30].astype(int) - 100
    assert np.sign(inside).tolist() == np.sign(np.asarray(colour) - 100).tolist()
    assert (out[5, 5] == 100).all() and (out[60, 60] == 100).all()
    assert np.abs(out[20, 30].astype(int) - colour).max() <= 10  # the outline: the label's own colour


def test_segment_colours_are_distinct_and_stable() -> None:
    first = [segment_colour(label) for label in range(1, len(PALETTE) + 1)]
    assert len(set(first)) == len(PALETTE)
    assert segment_colour(len(PALETTE) + 1) == segment_colour(1)
    with pytest.raises(ValueError, match="start at 1"):
        segment_colour(0)


def test_summary_table_panel_is_legible() -> None:
    lines = ["Sphere 1: Mass", "    Volume: 0.91 mL", "Automatic result, not verified by a physician."]
    with recording() as drawn:
        panel = text_panel(lines, 1024, title="test_spheres 0.1.0")
    assert drawn.of_kind("title") == ["test_spheres 0.1.0"]
    assert drawn.of_kind("text") == lines
    assert legibility_problems(panel, drawn) == []


def test_recording_notes_only_its_own_block() -> None:
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    draw_text(image, "before", (10, 30))
    with recording() as outer:
        draw_text(image, "outer", (10, 50))
        with recording() as inner:
            draw_text(image, "inner", (10, 70))
    assert [t.text for t in outer.texts] == ["outer"]
    assert [t.text for t in inner.texts] == ["inner"]
