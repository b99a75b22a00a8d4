"""Pixel data to modality values (HU for CT): one instance's frames as float32, colour averaged to grey."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.pixels import apply_modality_lut

from dicomnode.errors import PipelineInputError
from dicomnode.imaging.headers import number_of_frames

__all__ = ["modality_frames"]


def modality_frames(ds: Dataset) -> npt.NDArray[np.float32]:
    """All frames of one instance as float32 modality values, shape (frames, rows, columns)."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable or absent pixel data
        raise PipelineInputError(f"cannot decode pixel data of {ds.get('SOPInstanceUID', '?')}: {exc}") from exc
    try:
        values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
    except Exception as exc:  # a malformed Modality LUT / rescale: keep stored values, say so upstream
        raise PipelineInputError(f"cannot apply the modality LUT of {ds.get('SOPInstanceUID', '?')}: {exc}") from exc
    if str(ds.get("PhotometricInterpretation", "")).startswith(("RGB", "YBR")) and values.shape[-1] == 3:
        values = values.mean(axis=-1).astype(np.float32)
    if number_of_frames(ds) == 1 and values.ndim == 2:
        values = values[np.newaxis]
    return values
