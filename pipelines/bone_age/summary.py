"""The summary picture: the left hand with the 13 regions and their grades, a table of grades, scores and
ages, and the maturity score on each standard's 50th-centile curve for the patient's sex (a growth chart),
drawn with the contract's drawing primitives (outlined text, legend, panels)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from dicomnode.plugins import drawing
from dicomnode.plugins.drawing import PALETTE, Rgb, RgbImage
from pipelines.bone_age.bones import BONE_KEYS, BY_KEY
from pipelines.bone_age.handshape import FloatImage
from pipelines.bone_age.localise import Region
from pipelines.bone_age.scoring import Scoring, Standard, tables

HEIGHT = 900
RAY_COLOURS: dict[int, Rgb] = {1: PALETTE[0], 3: PALETTE[1], 5: PALETTE[2], 0: PALETTE[5]}
RAY_NAMES = {1: "ray I (thumb)", 3: "ray III", 5: "ray V", 0: "radius, ulna"}
STANDARD_COLOURS: dict[Standard, Rgb] = {Standard.TW3: PALETTE[3], Standard.CHN: PALETTE[6]}


@dataclass
class SummaryInput:
    image: FloatImage  # the left hand, display values 0..1
    regions: Mapping[str, Region]  # on ``image``
    labels: Mapping[str, str]  # per bone, e.g. "F / 7"
    sex: str | None
    scorings: Sequence[Scoring]
    chronological_years: float | None
    model_age_years: float | None
    lines: Sequence[str]  # the table, one row per line
    headline: str


def _hand_panel(data: SummaryInput) -> RgbImage:
    rows, cols = data.image.shape
    scale = HEIGHT / rows
    grey = cv2.resize(drawing.window(data.image, 0.0, 1.0), (max(1, round(cols * scale)), HEIGHT))
    panel = drawing.grey_to_rgb(np.asarray(grey, np.uint8))
    thickness = max(2, round(HEIGHT / 450))
    text_scale = drawing.text_scale(HEIGHT) * 0.75
    for bone in BONE_KEYS:
        region = data.regions.get(bone)
        if region is None:
            continue
        colour = RAY_COLOURS[BY_KEY[bone].ray]
        pts = np.round(np.asarray(region.corners) * scale).astype(np.int32)
        cv2.polylines(panel, [pts], True, colour, thickness, cv2.LINE_AA)
        label = bone if not data.labels.get(bone) else f"{bone} {data.labels[bone]}"
        width = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, text_scale, 2)[0][0]
        x, y = int(pts[:, 0].max()) + 4, int(pts[:, 1].min()) + round(18 * text_scale)
        if x + width > panel.shape[1] - 4:  # no room on the right: write it on the left of the box
            x = max(2, int(pts[:, 0].min()) - width - 4)
        drawing.draw_text(panel, label, (x, max(y, 20)), scale=text_scale, colour=colour)
    return panel


def _with_legend(panel: RgbImage, entries: list[tuple[str, Rgb]], scale: float) -> RgbImage:
    """``panel`` with a legend strip below it."""
    strip = np.zeros((round(40 * scale) * ((len(entries) + 1) // 2) + 16, panel.shape[1], 3), np.uint8)
    half = (len(entries) + 1) // 2
    left, right = np.zeros_like(strip[:, : strip.shape[1] // 2]), np.zeros_like(strip[:, strip.shape[1] // 2 :])
    drawing.draw_legend(left, entries[:half], corner="top-left", scale=scale)
    drawing.draw_legend(right, entries[half:], corner="top-left", scale=scale)
    strip[:, : left.shape[1]] = left
    strip[:, left.shape[1] :] = right
    return drawing.stack_column([panel, strip])


def _curve(standard: Standard, sex: str) -> tuple[np.ndarray, np.ndarray]:
    """(ages, P50 maturity scores) of a standard's reference for ``sex``."""
    key = "male" if sex == "M" else "female"
    if standard is Standard.TW3:
        rows = np.asarray(tables()["tw3_score_to_age"][key], dtype=np.float64)
        return rows[:, 1], rows[:, 0]
    knots = tables()["chn_p50_score_by_age"][key]
    return np.asarray(knots["age"], np.float64), np.asarray(knots["score"], np.float64)


def _chart(data: SummaryInput, width: int, height: int) -> RgbImage:
    """Maturity score against age: each standard's 50th centile for the patient's sex, the bone age read off
    it (filled dot) and, when the age is known, the patient at their chronological age (ring)."""
    chart = np.zeros((height, width, 3), np.uint8)
    scale = drawing.text_scale(HEIGHT) * 0.6
    left, right, top, bottom = 70, 20, 50, 50
    max_age, max_score = 18.0, 1000.0

    def to_px(age: float, score: float) -> tuple[int, int]:
        x = left + age / max_age * (width - left - right)
        y = height - bottom - score / max_score * (height - top - bottom)
        return round(x), round(y)

    for age in range(0, 19, 2):
        cv2.line(chart, to_px(age, 0), to_px(age, max_score), (60, 60, 60), 1)
        drawing.draw_text(chart, str(age), (to_px(age, 0)[0] - 8, height - bottom + 22), scale=scale)
    for score in range(0, 1001, 200):
        cv2.line(chart, to_px(0, score), to_px(max_age, score), (60, 60, 60), 1)
        drawing.draw_text(chart, str(score), (6, to_px(0, score)[1] + 6), scale=scale)
    drawing.draw_text(chart, "age (years)", (width // 2 - 40, height - 8), scale=scale)
    sex_word = {"M": "boys", "F": "girls"}.get(data.sex or "", "sex unknown")
    drawing.draw_text(chart, f"maturity score vs age, 50th centile ({sex_word})", (left, 30), scale=scale * 1.1)
    legend = []
    for scoring in data.scorings:
        colour = STANDARD_COLOURS[scoring.standard]
        ages, scores = _curve(scoring.standard, scoring.sex)
        pts = np.array([to_px(a, s) for a, s in zip(ages, scores, strict=True)], np.int32)
        cv2.polylines(chart, [pts], False, colour, 2, cv2.LINE_AA)
        legend.append((scoring.standard.label, colour))
        bone_age = scoring.bone_age
        if bone_age.status == "in_range" and bone_age.years is not None:
            cv2.circle(chart, to_px(bone_age.years, scoring.total), 7, colour, -1, cv2.LINE_AA)
        if data.chronological_years is not None:
            here = to_px(min(data.chronological_years, max_age), scoring.total)
            cv2.circle(chart, here, 9, colour, 2, cv2.LINE_AA)
            if bone_age.years is not None:
                cv2.line(chart, to_px(bone_age.years, scoring.total), here, colour, 1, cv2.LINE_AA)
    legend.append(("dot: bone age, ring: chronological age", (200, 200, 200)))
    plot = np.ascontiguousarray(chart[top + 4 : height - bottom, left + 4 : width - right])
    drawing.draw_legend(plot, legend, corner="top-left", scale=scale)
    chart[top + 4 : height - bottom, left + 4 : width - right] = plot
    return chart


def wrap(text: str, width: int = 58) -> list[str]:
    return textwrap.wrap(text, width) or [""]


def draw_summary(data: SummaryInput) -> RgbImage:
    """The hand panel beside the table over the chart (no chart when nothing was scored)."""
    hand = _hand_panel(data)
    side_width = max(560, round(HEIGHT * 0.75))
    table = drawing.text_panel(list(data.lines), side_width, scale=0.62, title=data.headline)
    legend = [(RAY_NAMES[k], c) for k, c in RAY_COLOURS.items()]
    table = _with_legend(table, legend, 0.6)
    panels = [table]
    if data.scorings:
        panels.append(_chart(data, side_width, max(300, HEIGHT - table.shape[0] - 6)))
    side = drawing.stack_column(panels)
    if side.shape[0] > HEIGHT:
        side = drawing.fit(side, HEIGHT)
    canvas = np.zeros((HEIGHT, side.shape[1], 3), np.uint8)
    canvas[: side.shape[0]] = side
    return drawing.compose_row([hand, canvas], HEIGHT)
