"""Which source image (and frame) each slice of a label map lies on, from the headers alone.

A :class:`~dicomnode.plugins.api.LabelMap` is on the grid of the :class:`~dicomnode.plugins.api.Volume` that
``dicomnode.runner.volume.load_volume`` builds: frames sorted along the slice normal (stable, so frames at the
same position keep their input order). This module sorts the same way without decoding pixel data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import Dataset

from dicomnode.runner.volume import sorted_frames


@dataclass(frozen=True)
class SliceSource:
    """Slice k of a label map lies on ``frame_number`` (1-based) of ``dataset``."""

    dataset: Dataset
    frame_number: int


def slice_sources(datasets: Sequence[Dataset]) -> list[SliceSource]:
    """The source of every slice of the volume ``load_volume(datasets)`` would build, in slice order."""
    return [SliceSource(ref.dataset, ref.frame_index + 1) for ref in sorted_frames(datasets)]
