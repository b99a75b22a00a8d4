"""The summary image: a rib-cage overview (coronal maximum intensity projection with the bones tinted and the
fractures boxed and numbered), key axial slices through the fractures, and a text panel with what was found
and which path found it. Displayed the radiological way: patient's right on the image's left, head up."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from dicomnode.plugins import drawing
from dicomnode.plugins.api import Volume
from pipelines.ct_fracture.analysis import Analysis
from pipelines.ct_fracture.anatomy import METAL, Axes

TYPE_COLOURS: dict[str | None, drawing.Rgb] = {
    "fresh": (213, 94, 0),
    "old": (86, 180, 233),
    "post-operative": (240, 228, 66),
    "suspected": (204, 121, 167),
    "other": (0, 158, 115),
    None: (255, 255, 255),
}
BONE_COLOURS = {"spine": (0, 114, 178), "rib": (230, 159, 0), "other": (0, 158, 115), "metal": (240, 228, 66)}
PANEL_HEIGHT = 420


def _bone_window(values: npt.NDArray[np.float32]) -> drawing.RgbImage:
    return drawing.grey_to_rgb(drawing.window(values, -250.0, 1250.0))


def _axes(volume: Volume) -> Axes:
    return Axes.from_direction(volume.direction) or Axes(1, 1, 1)


def _coronal(analysis: Analysis, volume: Volume, axes: Axes) -> tuple[drawing.RgbImage, float]:
    """MIP through the body front to back, (z, x) turned head up, patient's right on the left."""
    hu = volume.array
    mip = np.where(analysis.masks.body, hu, -1000.0).max(axis=1)
    labels = analysis.skeleton.labels.max(axis=1)
    kinds = np.zeros_like(labels)
    for label, bone in analysis.skeleton.bones.items():
        key = bone.kind if bone.kind in BONE_COLOURS else "other"
        kinds[labels == label] = list(BONE_COLOURS).index(key) + 1
    image = _bone_window(mip)
    image = drawing.overlay_labels(image, kinds, {k + 1: c for k, c in enumerate(BONE_COLOURS.values())}, alpha=0.25)
    for k, fracture in enumerate(analysis.fractures, start=1):
        colour = TYPE_COLOURS.get(fracture.type, TYPE_COLOURS[None])
        z0, _, x0, z1, _, x1 = (round(v) for v in fracture.box)
        cv2.rectangle(image, (x0 - 2, z0 - 2), (x1 + 1, z1 + 1), colour, 1)
        drawing.draw_text(image, str(k), (x1 + 3, max(10, z0 + 8)), scale=0.4, colour=colour)
    if axes.superior > 0:
        image = image[::-1]
    if axes.left < 0:
        image = image[:, ::-1]
    aspect = volume.spacing[0] / volume.spacing[2]
    resized = cv2.resize(np.ascontiguousarray(image), (image.shape[1], max(1, round(image.shape[0] * aspect))))
    return np.ascontiguousarray(resized, dtype=np.uint8), float(volume.spacing[2])


def _axial(analysis: Analysis, volume: Volume, axes: Axes, k: int) -> drawing.RgbImage:
    fracture = analysis.fractures[k]
    z = int(np.clip(round(fracture.centre[0]), 0, volume.array.shape[0] - 1))
    image = _bone_window(volume.array[z])
    labels = analysis.skeleton.labels[z]
    image = drawing.overlay_labels(
        image, ((labels > 0) & (labels != METAL)).astype(np.uint8), {1: (230, 159, 0)}, alpha=0.15
    )
    for j, other in enumerate(analysis.fractures):
        if other.box[0] <= z < other.box[3]:
            colour = TYPE_COLOURS.get(other.type, TYPE_COLOURS[None])
            _, y0, x0, _, y1, x1 = (round(v) for v in other.box)
            cv2.rectangle(image, (x0 - 2, y0 - 2), (x1 + 1, y1 + 1), colour, 2)
            drawing.draw_text(image, str(j + 1), (x1 + 4, max(12, y0 + 10)), scale=0.5, colour=colour)
    if axes.posterior < 0:
        image = image[::-1]
    if axes.left < 0:
        image = image[:, ::-1]
    image = np.ascontiguousarray(image)
    drawing.draw_scale_bar(image, float(volume.spacing[2]) if volume.pixel_spacing_known else None)
    drawing.draw_orientation(image, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    drawing.draw_text(image, f"#{k + 1}  slice {z + 1}", (8, 22), scale=0.55, boxed=True)
    return image


def _lines(analysis: Analysis) -> list[str]:
    lines = [f"Bones: {analysis.bone_path} segmentation; ribs {analysis.skeleton.numbering}"]
    if analysis.detection != "learned":
        lines.append(f"FRACTURE DETECTION NOT INSTALLED ({analysis.detection}): no fracture was looked for")
        return lines
    if not analysis.fractures:
        lines.append("Fracture detection (learned): no fracture found on bone")
    for k, f in enumerate(analysis.fractures, start=1):
        where = f.bone.name if f.bone is not None else "bone"
        kind = f"{f.type} ({f.typed_by})" if f.type else "type not assessed"
        lines.append(f"#{k} {where}: {kind}, confidence {f.score:.2f}")
    if analysis.detections_off_bone:
        lines.append(f"{analysis.detections_off_bone} detection(s) off bone discarded")
    return lines


def render(analysis: Analysis, volume: Volume) -> drawing.RgbImage:
    axes = _axes(volume)
    overview, mm_per_px = _coronal(analysis, volume, axes)
    drawing.draw_text(overview, "Rib cage (MIP)", (8, 22), scale=0.55, boxed=True)
    drawing.draw_scale_bar(overview, mm_per_px if volume.pixel_spacing_known else None)
    drawing.draw_orientation(overview, (1.0, 0.0, 0.0), (0.0, 0.0, -1.0))
    order = sorted(range(len(analysis.fractures)), key=lambda i: -analysis.fractures[i].score)[:3]
    panels = [overview] + [_axial(analysis, volume, axes, i) for i in order]
    row = drawing.compose_row(panels, PANEL_HEIGHT)
    legend = [(name, colour) for name, colour in TYPE_COLOURS.items() if name is not None]
    if analysis.fractures:
        drawing.draw_legend(row, legend, corner="top-right", scale=0.45)
    text = drawing.text_panel(_lines(analysis), row.shape[1], scale=0.55, title="CT fracture detection")
    return drawing.stack_column([row, text])
