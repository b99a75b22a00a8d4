"""Write a cine MR (position, time, row, column) the three ways sites store one.

- ``classic``: MR Image Storage, one instance per position and phase, TriggerTime and CardiacNumberOfImages
  (how the real Sunnybrook cines are stored);
- ``enhanced``: one Enhanced MR Image Storage instance holding every frame, positions and trigger delays in
  per-frame functional groups, with a (stack position, temporal position) dimension index;
- ``series_per_position``: classic instances, one series per slice position (sites whose scanners export
  each slice of a short-axis stack separately).

Instances are written in a shuffled order of InstanceNumber within each position so readers must sort by
time, not trust the file order.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage, generate_uid

from dicomnode.errors import ValidationError
from dicomnode.testing.synthetic import StudyInfo, base_dataset

__all__ = ["CineLayout", "write_cine"]


class CineLayout(enum.Enum):
    CLASSIC = "classic"
    ENHANCED = "enhanced"
    SERIES_PER_POSITION = "series_per_position"


def _unit(v: Sequence[float]) -> npt.NDArray[np.float64]:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def _mr_common(ds: Dataset, pixels: npt.NDArray[np.uint16]) -> None:
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SS"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0


def _classic(
    pixels: npt.NDArray[np.uint16],
    out_dir: Path,
    info: StudyInfo,
    geometry: tuple[list[list[float]], list[float], tuple[float, float], float],
    trigger_ms: npt.NDArray[np.float64],
    series_per_position: bool,
    rng: np.random.Generator,
) -> list[Path]:
    positions, orientation, spacing, thickness = geometry
    n_pos, n_time = pixels.shape[:2]
    series_uids = [generate_uid() for _ in range(n_pos)] if series_per_position else [generate_uid()] * n_pos
    paths = []
    numbers = rng.permutation(n_time)  # instance numbers out of time order within each position
    for p in range(n_pos):
        for t in range(n_time):
            ds = base_dataset(MRImageStorage, info, "MR")
            ds.SeriesInstanceUID = series_uids[p]
            ds.SeriesNumber = p + 1 if series_per_position else 1
            ds.SeriesDescription = "SA cine" + (f" slice {p + 1}" if series_per_position else "")
            ds.BodyPartExamined = "HEART"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.InstanceNumber = int(p * n_time + numbers[t] + 1)
            ds.FrameOfReferenceUID = info.frame_of_reference_uid
            ds.PositionReferenceIndicator = ""
            ds.PatientPosition = "HFS"
            ds.ImagePositionPatient = positions[p]
            ds.ImageOrientationPatient = orientation
            ds.PixelSpacing = list(spacing)
            ds.SliceThickness = thickness
            ds.TriggerTime = float(trigger_ms[t])
            ds.CardiacNumberOfImages = n_time
            ds.TemporalPositionIdentifier = t + 1
            ds.NumberOfTemporalPositions = n_time
            ds.RepetitionTime = 40.0
            ds.EchoTime = 1.6
            ds.EchoTrainLength = 1
            _mr_common(ds, pixels)
            ds.PixelData = np.ascontiguousarray(pixels[p, t]).tobytes()
            path = out_dir / f"MR_{p:02d}_{ds.InstanceNumber:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def _item(**values: object) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def _enhanced(
    pixels: npt.NDArray[np.uint16],
    out_dir: Path,
    info: StudyInfo,
    geometry: tuple[list[list[float]], list[float], tuple[float, float], float],
    trigger_ms: npt.NDArray[np.float64],
) -> list[Path]:
    positions, orientation, spacing, thickness = geometry
    n_pos, n_time = pixels.shape[:2]
    ds = base_dataset(EnhancedMRImageStorage, info, "MR")
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = "SA cine enhanced"
    ds.BodyPartExamined = "HEART"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = info.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.MagneticFieldStrength = 1.5
    ds.AcquisitionContrast = "MIXED"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.NumberOfFrames = n_pos * n_time
    _mr_common(ds, pixels)
    organisation = generate_uid()
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=organisation)])
    ds.DimensionIndexSequence = DicomSequence(
        [
            _item(
                DimensionOrganizationUID=organisation,
                DimensionIndexPointer=0x00209057,  # In-Stack Position Number
                FunctionalGroupPointer=0x00209111,  # Frame Content Sequence
            ),
            _item(
                DimensionOrganizationUID=organisation,
                DimensionIndexPointer=0x00209128,  # Temporal Position Index
                FunctionalGroupPointer=0x00209111,
            ),
        ]
    )
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence(
        [_item(PixelSpacing=list(spacing), SliceThickness=thickness, SpacingBetweenSlices=thickness)]
    )
    shared.PlaneOrientationSequence = DicomSequence([_item(ImageOrientationPatient=orientation)])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    per_frame = []
    # Time-major frame order (all positions of phase 1, then phase 2, ...), as several vendors store it.
    for t in range(n_time):
        for p in range(n_pos):
            group = Dataset()
            group.FrameContentSequence = DicomSequence(
                [
                    _item(
                        StackID="1",
                        InStackPositionNumber=p + 1,
                        TemporalPositionIndex=t + 1,
                        DimensionIndexValues=[p + 1, t + 1],
                    )
                ]
            )
            group.PlanePositionSequence = DicomSequence([_item(ImagePositionPatient=positions[p])])
            group.CardiacSynchronizationSequence = DicomSequence(
                [_item(NominalCardiacTriggerDelayTime=float(trigger_ms[t]))]
            )
            per_frame.append(group)
            frames.append(pixels[p, t])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = np.ascontiguousarray(np.stack(frames)).tobytes()
    path = out_dir / "MR_enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    return [path]


def write_cine(
    pixels: npt.NDArray[np.integer] | npt.NDArray[np.floating],
    out_dir: Path,
    *,
    layout: CineLayout = CineLayout.CLASSIC,
    info: StudyInfo | None = None,
    pixel_spacing: tuple[float, float] = (1.4, 1.4),
    slice_spacing: float = 8.0,
    row_direction: Sequence[float] = (1.0, 0.0, 0.0),
    column_direction: Sequence[float] = (0.0, 1.0, 0.0),
    origin: Sequence[float] = (-100.0, -100.0, 0.0),
    cycle_ms: float = 800.0,
    seed: int = 0,
) -> list[Path]:
    """Write ``pixels`` (position, time, row, column) as a cine MR; return the written paths.

    ``row_direction``/``column_direction`` (ImageOrientationPatient) allow oblique short-axis planes;
    positions step along their normal by ``slice_spacing`` mm. Trigger times are evenly spread over
    ``cycle_ms``.
    """
    if pixels.ndim != 4:
        raise ValidationError(f"pixels must be (position, time, row, column), got shape {pixels.shape}")
    info = info or StudyInfo()
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = np.clip(np.rint(pixels), 0, 65535).astype(np.uint16)
    row, col = _unit(row_direction), _unit(column_direction)
    normal = np.cross(row, col)
    # DS values hold at most 16 characters: round as a scanner would.
    positions = [
        [round(float(v), 4) for v in np.asarray(origin) + p * slice_spacing * normal] for p in range(pixels.shape[0])
    ]
    orientation = [round(float(v), 8) for v in (*row, *col)]
    geometry = (positions, orientation, pixel_spacing, float(slice_spacing))
    n_time = pixels.shape[1]
    trigger = np.arange(n_time) * cycle_ms / n_time + cycle_ms / (2 * n_time)
    if layout is CineLayout.ENHANCED:
        return _enhanced(stored, out_dir, info, geometry, trigger)
    rng = np.random.default_rng(seed)
    return _classic(stored, out_dir, info, geometry, trigger, layout is CineLayout.SERIES_PER_POSITION, rng)
