"""A series (single- or multi-frame) as a :class:`~dicomnode.imaging.types.Volume` sorted along the slice
normal. Tolerant when reading: missing orientation falls back to axial, missing positions to input order,
missing spacing to 1 mm (``pixel_spacing_known`` False), missing rescale to identity."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomnode.errors import PipelineInputError
from dicomnode.imaging.geometry import FrameRef, frame_geometry, slice_normal, sorted_frames
from dicomnode.imaging.headers import pixel_spacing
from dicomnode.imaging.pixels import modality_frames
from dicomnode.imaging.types import FrameSource, Volume

__all__ = ["frame_source", "load_volume"]

PixelReader = Callable[[Dataset], npt.NDArray[np.float32]]


def frame_source(ds: Dataset, frame_index: int) -> FrameSource:
    return FrameSource(str(ds.SOPInstanceUID), frame_index + 1, str(ds.get("SeriesInstanceUID", "") or ""))


def _stack(refs: Sequence[FrameRef], read_pixels: PixelReader) -> npt.NDArray[np.float32]:
    """The frames of ``refs`` (in order) in one preallocated float32 array. Each instance is decoded once and
    dropped when its last frame is in: a list of every decoded frame, then stacked, held the volume twice
    (a 300-slice CT: 300 MB more at the job's peak)."""
    remaining = Counter(id(ref.dataset) for ref in refs)
    decoded: dict[int, npt.NDArray[np.float32]] = {}
    array: npt.NDArray[np.float32] | None = None
    for index, ref in enumerate(refs):
        key = id(ref.dataset)
        if key not in decoded:
            decoded[key] = read_pixels(ref.dataset)
        frames = decoded[key]
        if ref.frame_index >= len(frames):
            raise PipelineInputError("NumberOfFrames does not match the decoded pixel data")
        frame = frames[ref.frame_index]
        if array is None:
            array = np.empty((len(refs), *frame.shape), dtype=np.float32)
        elif frame.shape != array.shape[1:]:
            raise PipelineInputError(f"frames differ in size: {sorted({frame.shape, array.shape[1:]})}")
        array[index] = frame
        remaining[key] -= 1
        if remaining[key] == 0:
            del decoded[key]
    if array is None:
        raise PipelineInputError("no frames to load")
    return array


def load_volume(datasets: Sequence[Dataset], read_pixels: PixelReader = modality_frames) -> Volume:
    """Stack ``datasets`` into a (z, y, x) volume sorted along the slice normal.

    ``read_pixels`` gives the modality frames of one header (it may read the file: see ImageSeries).
    """
    if not datasets:
        raise PipelineInputError("no datasets to load")
    refs = sorted_frames(datasets)
    array = _stack(refs, read_pixels)
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
        array=array,
        spacing=(z_spacing, row_spacing, col_spacing),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=tuple(float(v) for v in direction),
        sources=[frame_source(ref.dataset, ref.frame_index) for ref in refs],
        frame_of_reference_uid=str(datasets[0].get("FrameOfReferenceUID", "") or ""),
        pixel_spacing_known=spacing is not None,
    )
