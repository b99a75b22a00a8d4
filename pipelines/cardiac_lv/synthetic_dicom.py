"""Cine phantoms written as real DICOM, the three ways sites store short-axis cines: classic MR Image Storage
(one instance per position and phase, one series), one Enhanced MR instance holding every frame, and one
series per slice position. For tests, benchmarks and demos; the pipeline's runtime never imports this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage, generate_uid

from dicomnode.synthetic import StudyInfo, _base_dataset

__all__ = ["CineGeometry", "write_classic_cine", "write_enhanced_cine", "write_series_per_position"]

# An oblique short-axis plane, like a real planning (rows and columns orthonormal).
OBLIQUE = (0.72, 0.62, -0.31, -0.45, 0.75, 0.49)


@dataclass(frozen=True)
class CineGeometry:
    """Pixel spacing (mm, None: left out of the headers), slice spacing (mm), orientation, the first
    position's corner, and the RR interval the trigger times span."""

    pixel_spacing_mm: float | None = 1.5
    slice_spacing_mm: float = 10.0
    orientation: tuple[float, float, float, float, float, float] = OBLIQUE
    origin: tuple[float, float, float] = (-90.0, -120.0, 40.0)
    rr_ms: float = 800.0
    body_part: str | None = "HEART"
    series_description: str = "cine SAX"
    trigger_times: bool = True
    extra: dict[str, object] = field(default_factory=dict)

    def normal(self) -> npt.NDArray[np.float64]:
        o = np.asarray(self.orientation, dtype=np.float64)
        return np.cross(o[:3], o[3:])

    def position(self, p: int) -> list[float]:
        return [float(v) for v in np.asarray(self.origin) + p * self.slice_spacing_mm * self.normal()]


def _pixels(images: npt.NDArray[np.floating]) -> npt.NDArray[np.uint16]:
    return np.clip(np.rint(images), 0, 65535).astype(np.uint16)


def _mr_common(ds: Dataset, geometry: CineGeometry, info: StudyInfo, rows: int, cols: int) -> None:
    ds.FrameOfReferenceUID = info.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    if geometry.body_part:
        ds.BodyPartExamined = geometry.body_part
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SeriesDate = info.study_date
    ds.SeriesTime = "120000"
    for key, value in geometry.extra.items():
        setattr(ds, key, value)


def _classic_instance(
    pixels: npt.NDArray[np.uint16],
    geometry: CineGeometry,
    info: StudyInfo,
    series_uid: str,
    series_number: int,
    p: int,
    t: int,
    n_times: int,
    instance_number: int,
) -> Dataset:
    ds = _base_dataset(MRImageStorage, info, "MR")
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = geometry.series_description
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    _mr_common(ds, geometry, info, int(pixels.shape[0]), int(pixels.shape[1]))
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SS"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 3.2
    ds.EchoTime = 1.4
    ds.EchoTrainLength = 1
    ds.ImagePositionPatient = geometry.position(p)
    ds.ImageOrientationPatient = list(geometry.orientation)
    ds.SliceThickness = min(8.0, geometry.slice_spacing_mm)
    ds.SpacingBetweenSlices = geometry.slice_spacing_mm
    ds.SliceLocation = p * geometry.slice_spacing_mm
    if geometry.pixel_spacing_mm is not None:
        ds.PixelSpacing = [geometry.pixel_spacing_mm, geometry.pixel_spacing_mm]
    if geometry.trigger_times:
        ds.TriggerTime = round(t * geometry.rr_ms / n_times, 2)
    ds.CardiacNumberOfImages = n_times
    ds.TemporalPositionIdentifier = t + 1
    ds.NumberOfTemporalPositions = n_times
    ds.PixelData = pixels.tobytes()
    return ds


def write_classic_cine(
    images: npt.NDArray[np.floating],
    out_dir: Path,
    geometry: CineGeometry | None = None,
    info: StudyInfo | None = None,
    *,
    series_number: int = 1,
    shuffle_seed: int | None = 0,
) -> list[Path]:
    """(position, time, rows, columns) as one classic MR series, one file per frame. Instance numbers run
    position-major; the files are written in a shuffled order (``shuffle_seed``) so that nothing relies on
    the order on disk."""
    geometry = geometry or CineGeometry()
    info = info or StudyInfo(study_description="Cardiac MR")
    stack = _pixels(images if images.ndim == 4 else images[np.newaxis])
    n_pos, n_times = stack.shape[:2]
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    order = [(p, t) for p in range(n_pos) for t in range(n_times)]
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(order)
    paths = []
    for k, (p, t) in enumerate(order):
        ds = _classic_instance(
            stack[p, t], geometry, info, series_uid, series_number, p, t, n_times, p * n_times + t + 1
        )
        path = out_dir / f"MR{k + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_series_per_position(
    images: npt.NDArray[np.floating], out_dir: Path, geometry: CineGeometry | None = None, info: StudyInfo | None = None
) -> list[Path]:
    """(position, time, rows, columns) as one classic MR series per slice position (one study)."""
    geometry = geometry or CineGeometry()
    info = info or StudyInfo(study_description="Cardiac MR")
    stack = _pixels(images)
    paths: list[Path] = []
    for p in range(stack.shape[0]):
        series_uid = generate_uid()
        folder = out_dir / f"series{p + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for t in range(stack.shape[1]):
            ds = _classic_instance(stack[p, t], geometry, info, series_uid, 100 + p, p, t, stack.shape[1], t + 1)
            path = folder / f"MR{t + 1:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def _item(**values: object) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def write_enhanced_cine(
    images: npt.NDArray[np.floating],
    path: Path,
    geometry: CineGeometry | None = None,
    info: StudyInfo | None = None,
    *,
    frame_order: Sequence[tuple[int, int]] | None = None,
) -> Path:
    """(position, time, rows, columns) as one Enhanced MR Image instance: positions and phases in the
    per-frame functional groups (plane position, frame content with temporal position index, cardiac
    synchronisation with the nominal trigger delay), spacing and orientation shared. ``frame_order`` lists
    (position, time) per stored frame (default time-major, as many scanners store them)."""
    geometry = geometry or CineGeometry()
    info = info or StudyInfo(study_description="Cardiac MR")
    stack = _pixels(images if images.ndim == 4 else images[np.newaxis])
    n_pos, n_times, rows, cols = stack.shape
    order = list(frame_order) if frame_order is not None else [(p, t) for t in range(n_times) for p in range(n_pos)]
    ds = _base_dataset(EnhancedMRImageStorage, info, "MR")
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = geometry.series_description
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    _mr_common(ds, geometry, info, rows, cols)
    ds.ContentQualification = "PRODUCT"
    ds.NumberOfFrames = len(order)
    ds.AcquisitionContrast = "MIXED"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.BurnedInAnnotation = "NO"
    shared = Dataset()
    shared.PlaneOrientationSequence = DicomSequence([_item(ImageOrientationPatient=list(geometry.orientation))])
    if geometry.pixel_spacing_mm is not None:
        shared.PixelMeasuresSequence = DicomSequence(
            [
                _item(
                    PixelSpacing=[geometry.pixel_spacing_mm, geometry.pixel_spacing_mm],
                    SliceThickness=min(8.0, geometry.slice_spacing_mm),
                    SpacingBetweenSlices=geometry.slice_spacing_mm,
                )
            ]
        )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for p, t in order:
        item = Dataset()
        item.FrameContentSequence = DicomSequence(
            [
                _item(
                    TemporalPositionIndex=t + 1,
                    StackID="1",
                    InStackPositionNumber=p + 1,
                    DimensionIndexValues=[p + 1, t + 1],
                )
            ]
        )
        item.PlanePositionSequence = DicomSequence([_item(ImagePositionPatient=geometry.position(p))])
        if geometry.trigger_times:
            item.CardiacSynchronizationSequence = DicomSequence(
                [_item(NominalCardiacTriggerDelayTime=round(t * geometry.rr_ms / n_times, 2))]
            )
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = np.stack([stack[p, t] for p, t in order]).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
