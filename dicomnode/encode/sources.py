"""The source images a result refers to, by SOP Instance UID: what the SEG and SR builders look frames up in.

Results name their source frames (:class:`~dicomnode.plugins.api.FrameSource`); the encoder needs the
headers behind them (patient, study, geometry). Headers only: no pixel data is needed to encode.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from pydicom import Dataset

from dicomnode.errors import EncodeError
from dicomnode.imaging.geometry import frame_geometry, has_geometry
from dicomnode.imaging.headers import (
    instance_number,
    number_of_frames,
    pixel_spacing,
    repair_header,
    slice_thickness,
    writable_copy,
)
from dicomnode.plugins.api import FrameSource

__all__ = ["SourceIndex"]


class SourceIndex:
    """Source headers by SOP Instance UID, in InstanceNumber order; remembers which ones were referenced."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        if not datasets:
            raise EncodeError("the encoder needs the source datasets")
        unique = {str(ds.SOPInstanceUID): writable_copy(repair_header(ds)) for ds in datasets}
        self.datasets: list[Dataset] = sorted(unique.values(), key=instance_number)
        self._by_uid = {str(ds.SOPInstanceUID): ds for ds in self.datasets}
        self.referenced: dict[str, Dataset] = {}

    @property
    def first(self) -> Dataset:
        return self.datasets[0]

    def get(self, sop_instance_uid: str) -> Dataset:
        ds = self._by_uid.get(sop_instance_uid)
        if ds is None:
            raise EncodeError(f"the result references image {sop_instance_uid}, which is not among the sources")
        return ds

    def frame(self, source: FrameSource) -> Dataset:
        """The header of ``source``'s instance, checking that the frame exists."""
        ds = self.get(source.sop_instance_uid)
        if source.frame_number > number_of_frames(ds):
            raise EncodeError(
                f"the result references frame {source.frame_number} of {source.sop_instance_uid}, "
                f"which has {number_of_frames(ds)}"
            )
        return ds

    def mark(self, sop_instance_uid: str) -> Dataset:
        """Look up and remember an image the report points at (it goes into the Image Library)."""
        ds = self.get(sop_instance_uid)
        self.referenced[sop_instance_uid] = ds
        return ds

    def library(self) -> list[Dataset]:
        """The referenced images as the Image Library builder reads them (see :func:`library_view`)."""
        return [library_view(ds) for ds in sorted(self.referenced.values(), key=instance_number)]


_CROSS_SECTIONAL = ("CT", "MR", "PT")
_PROJECTION = ("CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA")


def library_view(ds: Dataset) -> Dataset:
    """A shallow copy of ``ds`` with the top-level geometry the Image Library descriptors read.

    Enhanced multi-frame images keep spacing, position and orientation in functional groups: they are
    copied up (first frame). An image whose header cannot supply the descriptors (a radiograph without
    ImagerPixelSpacing or PatientOrientation, an MR without geometry) gets an entry without them rather
    than invented values: its Modality is masked in the copy so that highdicom writes none.
    """
    view = copy.copy(ds)
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in _CROSS_SECTIONAL:
        position, orientation = frame_geometry(ds, 0)
        spacing = pixel_spacing(ds, 0)
        if "PixelSpacing" not in ds and spacing is not None:
            view.PixelSpacing = list(spacing[0])
        if "ImagePositionPatient" not in ds and has_geometry(ds):
            view.ImagePositionPatient = list(position)
            view.ImageOrientationPatient = list(orientation)
        if "SliceThickness" not in ds:
            view.SliceThickness = slice_thickness(ds)
        complete = all(k in view for k in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient"))
    elif modality in _PROJECTION:
        complete = "ImagerPixelSpacing" in ds and len(ds.get("PatientOrientation", None) or []) == 2
    else:
        complete = True
    if not complete:
        view.Modality = "OT"
    return view
