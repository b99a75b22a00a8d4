"""A series (single- or multi-frame) as a :class:`~dicomnode.imaging.types.Volume` sorted along the slice
normal. Tolerant when reading: missing orientation falls back to axial, missing positions to input order,
missing spacing to 1 mm (``pixel_spacing_known`` False), missing rescale to identity."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomnode.errors import PipelineInputError
from dicomnode.imaging.geometry import frame_geometry, slice_normal, sorted_frames
from dicomnode.imaging.headers import pixel_spacing
from dicomnode.imaging.pixels import modality_frames
from dicomnode.imaging.types import FrameSource, Volume

__all__ = ["frame_source", "load_volume"]

PixelReader = Callable[[Dataset], npt.NDArray[np.float32]]


def frame_source(ds: Dataset, frame_index: int) -> FrameSource:
    return FrameSource(str(ds.SOPInstanceUID), frame_index + 1, str(ds.get("SeriesInstanceUID", "") or ""))


def load_volume(datasets: Sequence[Dataset], read_pixels: PixelReader = modality_frames) -> Volume:
    """Stack ``datasets`` into a (z, y, x) volume sorted along the slice normal.

    ``read_pixels`` gives the modality frames of one header (it may read the file: see ImageSeries).
    """
    if not datasets:
        raise PipelineInputError("no datasets to load")
    refs = sorted_frames(datasets)
    decoded = {id(ds): read_pixels(ds) for ds in datasets}
    frames = [
        decoded[id(ref.dataset)][ref.frame_index] for ref in refs if ref.frame_index < len(decoded[id(ref.dataset)])
    ]
    if len(frames) != len(refs):
        raise PipelineInputError("NumberOfFrames does not match the decoded pixel data")
    if len({f.shape for f in frames}) != 1:
        raise PipelineInputError(f"frames differ in size: {sorted({f.shape for f in frames})}")
    orientation = frame_geometry(datasets[0], 0)[1]
    row_dir = np.array(orientation[:3])
    col_dir = np.array(orientation[3:])
    normal = slice_normal(orientation)
    distances = np.array([ref.distance for ref in refs])
    if len(refs) > 1:
        gaps = np.diff(distances)
        z_spacing = float(np.median(gaps[gaps > 0])) if np.any(gaps > 0) else 1.0
    else:
        z_spacing = float(datasets[0].get("SliceThickness", 1.0) or 1.0)
    if z_spacing <= 0:
        z_spacing = 1.0
    spacing = pixel_spacing(datasets[0])
    row_spacing, col_spacing = spacing[0] if spacing else (1.0, 1.0)
    # Columns of the direction matrix: patient-space directions of the x, y and z index axes.
    direction = (
        row_dir[0], col_dir[0], normal[0],
        row_dir[1], col_dir[1], normal[1],
        row_dir[2], col_dir[2], normal[2],
    )  # fmt: skip
    origin = refs[0].position
    return Volume(
        array=np.stack(frames).astype(np.float32, copy=False),
        spacing=(z_spacing, row_spacing, col_spacing),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=tuple(float(v) for v in direction),
        sources=[frame_source(ref.dataset, ref.frame_index) for ref in refs],
        frame_of_reference_uid=str(datasets[0].get("FrameOfReferenceUID", "") or ""),
        pixel_spacing_known=spacing is not None,
    )
