"""The summary picture: the image with the split line, the marker boxes and letters, the kept hand outlined,
and a line of text with the limb count, the kept side, the confidence and the flags."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.hand_xray.markers import Marker

Gray = npt.NDArray[np.uint8]
BoolMask = npt.NDArray[np.bool_]

_YELLOW = (255, 220, 0)
_CYAN = (0, 220, 255)
_GREEN = (0, 255, 0)
_WHITE = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(image: npt.NDArray[np.uint8], line: str, origin: tuple[int, int], scale: float) -> None:
    cv2.putText(image, line, origin, _FONT, scale, (0, 0, 0), max(2, round(4 * scale)), cv2.LINE_AA)
    cv2.putText(image, line, origin, _FONT, scale, _WHITE, max(1, round(1.5 * scale)), cv2.LINE_AA)


def draw_summary(
    display: Gray,
    *,
    split_line: tuple[tuple[float, float], tuple[float, float]] | None,
    markers: Sequence[Marker],
    kept_outline: BoolMask,
    kept_box: tuple[int, int, int, int],
    lines: Sequence[str],
) -> npt.NDArray[np.uint8]:
    """RGB uint8 (rows, columns, 3) on the working grid."""
    rgb = np.ascontiguousarray(np.repeat(display[:, :, np.newaxis], 3, axis=2))
    scale = max(0.4, min(display.shape) / 900.0)
    thick = max(1, round(2 * scale))
    contours, _ = cv2.findContours(kept_outline.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(rgb, contours, -1, _GREEN, thick)
    x0, y0, x1, y1 = kept_box
    cv2.rectangle(rgb, (x0, y0), (x1, y1), _GREEN, max(1, thick // 2))
    if split_line is not None:
        (ax, ay), (bx, by) = split_line
        cv2.line(rgb, (round(ax), round(ay)), (round(bx), round(by)), _YELLOW, thick, cv2.LINE_AA)
    for marker in markers:
        mx0, my0, mx1, my1 = marker.box
        cv2.rectangle(rgb, (mx0 - 3, my0 - 3), (mx1 + 3, my1 + 3), _CYAN, thick)
        _text(rgb, marker.letter, (mx1 + 6, max(my0 + 12, 14)), 0.8 * scale + 0.2)
    step = round(28 * scale) + 4
    for k, line in enumerate(lines):
        _text(rgb, line, (8, step * (k + 1)), 0.7 * scale)
    return rgb
