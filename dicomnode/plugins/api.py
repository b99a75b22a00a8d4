"""The pipeline contract: the one module a pipeline imports from the node.

A pipeline declares what it accepts (a :class:`Selector`), what it produces, what it needs, and implements
``run(inputs, ctx) -> PipelineResult``. It returns typed results only; the node turns them into SR, SEG and
summary images, stores them and delivers them. A pipeline never touches the database, the network or
highdicom.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from dicomnode.errors import PipelineInputError, ValidationError

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = [
    "API_VERSION",
    "Code",
    "DerivedImage",
    "FindingGroup",
    "ImageRegion",
    "ImageSeries",
    "LabelMap",
    "Measurement",
    "OutputKind",
    "Pipeline",
    "PipelineInputError",
    "PipelineInputs",
    "PipelineResult",
    "PriorSpec",
    "PriorStudy",
    "ProducedBy",
    "QualitativeFinding",
    "RunContext",
    "Segment",
    "Selector",
    "TrainablePipeline",
    "Trigger",
    "Volume",
    "stable_uid",
    "verified_weights",
]

API_VERSION = "1"


# --------------------------------------------------------------------------------------------- vocabulary
class OutputKind(enum.Enum):
    """What a pipeline can produce; the encoder builds one DICOM object per kind."""

    SR = "SR"
    SEG = "SEG"
    SUMMARY = "SUMMARY"


class Trigger(enum.Enum):
    """Whether a pipeline runs once per complete series or once per complete study."""

    SERIES = "series"
    STUDY = "study"


class ProducedBy(enum.Enum):
    """Which path produced a result: it goes into result.json, the SR and the job's status."""

    CLASSICAL = "classical"
    LEARNED = "learned"


@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM Code Sequence item): value, scheme designator, meaning."""

    value: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        if not self.value or not self.scheme or not self.meaning:
            raise ValidationError(f"Code needs value, scheme and meaning, got {self!r}")


def stable_uid(*parts: str) -> str:
    """A DICOM UID derived from ``parts`` (2.25 form): the same parts always give the same UID.

    Used for tracking UIDs that must stay the same across reports of the same lesion.
    """
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()[:16]
    return f"2.25.{uuid.UUID(bytes=digest).int}"


# --------------------------------------------------------------------------------------------- selectors
@dataclass(frozen=True)
class Selector:
    """Which series (or studies) a pipeline accepts. Empty tuples mean "any".

    ``body_parts`` holds normalised body-part names (see ``dicomnode.routing.bodypart``), e.g. "CHEST", "HAND".
    ``series_description`` and ``study_description`` are case-insensitive regular expressions (searched).
    ``image_type_excludes``: a series whose ImageType contains any of these values is not accepted
    (e.g. "LOCALIZER"). ``max_slice_thickness_mm`` applies to volumes.
    """

    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    image_type_includes: tuple[str, ...] = ()
    image_type_excludes: tuple[str, ...] = ()
    series_description: str | None = None
    study_description: str | None = None
    min_instances: int = 1
    max_slice_thickness_mm: float | None = None
    trigger: Trigger = Trigger.SERIES

    def __post_init__(self) -> None:
        if self.min_instances < 1:
            raise ValidationError(f"Selector.min_instances must be >= 1, got {self.min_instances}")


@dataclass(frozen=True)
class PriorSpec:
    """A pipeline that compares with earlier studies of the same patient declares which it wants."""

    selector: Selector
    max_priors: int = 3
    max_age_days: int | None = None


# --------------------------------------------------------------------------------------------- inputs
@dataclass
class Volume:
    """A 3D image on the source grid, axis order (z, y, x) = (slice, row, column).

    ``array`` holds modality values (HU for CT) as float32. ``spacing`` is (z, y, x) in mm; ``origin`` the
    patient position (x, y, z) of voxel (0, 0, 0); ``direction`` the 3x3 direction cosine matrix whose columns
    are the patient-space directions of the x (column), y (row) and z (slice) index axes.
    ``sop_instance_uids[k]`` (and ``frame_numbers[k]``, 1-based, for multi-frame sources) identify the source
    of slice k, so that a label map on this grid can reference the source images.
    """

    array: npt.NDArray[np.float32]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    sop_instance_uids: list[str]
    frame_numbers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValidationError(f"Volume.array must be 3D (z, y, x), got shape {self.array.shape}")
        if len(self.sop_instance_uids) != self.array.shape[0]:
            raise ValidationError(
                f"Volume has {self.array.shape[0]} slices but {len(self.sop_instance_uids)} source UIDs"
            )
        if not self.frame_numbers:
            self.frame_numbers = [1] * self.array.shape[0]

    @property
    def voxel_volume_ml(self) -> float:
        z, y, x = self.spacing
        return z * y * x / 1000.0


class ImageSeries:
    """One series handed to a pipeline: the parsed headers (sorted) and their files.

    Pixel data is loaded on demand with :meth:`volume` (3D, CT/MR) or :meth:`frames` (2D images, cine).
    """

    def __init__(
        self,
        datasets: Sequence[Dataset],
        files: Sequence[Path] = (),
        body_part: str | None = None,
    ) -> None:
        if not datasets:
            raise PipelineInputError("ImageSeries needs at least one dataset")
        self.datasets: list[Dataset] = list(datasets)
        self.files: list[Path] = list(files)
        self.body_part = body_part
        self._volume: Volume | None = None

    @property
    def first(self) -> Dataset:
        return self.datasets[0]

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", ""))

    @property
    def series_instance_uid(self) -> str:
        return str(self.first.SeriesInstanceUID)

    @property
    def study_instance_uid(self) -> str:
        return str(self.first.StudyInstanceUID)

    def volume(self) -> Volume:
        """The series as a 3D volume (sorted along the slice normal); cached."""
        if self._volume is None:
            from dicomnode.runner.volume import load_volume

            self._volume = load_volume(self.datasets)
        return self._volume

    def frames(self) -> list[npt.NDArray[np.float32]]:
        """Every frame of every instance as 2D modality values, in acquisition order."""
        from dicomnode.runner.volume import load_frames

        return load_frames(self.datasets)


@dataclass
class PriorStudy:
    """An earlier study of the same patient: its series and, when the node analysed it, the earlier result."""

    study_instance_uid: str
    study_date: str
    series: list[ImageSeries]
    previous_result: PipelineResult | None = None


@dataclass
class DerivedImage:
    """A 2D image one pipeline hands to the next in a chain (e.g. the cropped left hand for bone age).

    ``pixels`` are modality values, (rows, columns). ``source_region`` is (row0, col0, row1, col1) in the source
    image's pixel grid, so the next pipeline can map its regions back to the source image.
    """

    name: str
    pixels: npt.NDArray[np.float32]
    pixel_spacing_mm: tuple[float, float] | None
    source_sop_instance_uid: str
    source_region: tuple[int, int, int, int]
    photometric: str = "MONOCHROME2"


@dataclass
class PipelineInputs:
    """Everything a pipeline's ``run`` receives.

    ``series``: the triggering series (one for a series trigger, all of the study's for a study trigger).
    ``priors``: earlier studies, newest first, when the pipeline declared a :class:`PriorSpec`.
    ``upstream``: results of the pipelines this one ``requires``, by pipeline name (chaining).
    """

    series: list[ImageSeries]
    priors: list[PriorStudy] = field(default_factory=list)
    upstream: dict[str, PipelineResult] = field(default_factory=dict)

    @property
    def primary(self) -> ImageSeries:
        return self.series[0]


@dataclass
class RunContext:
    """What the node tells a pipeline about this run: parameters from the config, weights, device, scratch."""

    params: Mapping[str, Any] = field(default_factory=dict)
    weights_dir: Path | None = None
    device: str = "cpu"
    work_dir: Path | None = None
    job_id: int | None = None


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Measurement:
    """A numeric measurement: concept name, value, UCUM unit (e.g. Code("mL", "UCUM", "milliliter"))."""

    name: Code
    value: float
    unit: Code
    derivation: Code | None = None
    method: Code | None = None


@dataclass(frozen=True)
class QualitativeFinding:
    """A coded (or textual) finding: concept name and coded value."""

    name: Code
    value: Code


@dataclass(frozen=True)
class ImageRegion:
    """A 2D region on one source image: SCOORD graphic in (column, row) pixel coordinates.

    ``graphic_type`` is one of POINT, POLYLINE (closed when the last point equals the first), CIRCLE,
    ELLIPSE, MULTIPOINT.
    """

    sop_instance_uid: str
    graphic_type: str
    points: tuple[tuple[float, float], ...]
    frame_number: int | None = None

    def __post_init__(self) -> None:
        allowed = {"POINT", "POLYLINE", "CIRCLE", "ELLIPSE", "MULTIPOINT"}
        if self.graphic_type not in allowed:
            raise ValidationError(f"ImageRegion.graphic_type must be one of {sorted(allowed)}")
        if not self.points:
            raise ValidationError("ImageRegion.points must not be empty")


@dataclass(frozen=True)
class Segment:
    """One segment of a label map: its label value in the array and its coded description."""

    label: int
    name: str
    category: Code
    type: Code
    tracking_id: str | None = None
    tracking_uid: str | None = None


@dataclass
class LabelMap:
    """Segments on the grid of one source :class:`Volume` (same shape): 0 = background, else a label."""

    array: npt.NDArray[np.integer[Any]]
    segments: list[Segment]
    source_series_uid: str

    def __post_init__(self) -> None:
        labels = [s.label for s in self.segments]
        if len(set(labels)) != len(labels) or any(label < 1 for label in labels):
            raise ValidationError(f"LabelMap segment labels must be unique and >= 1, got {labels}")


@dataclass
class FindingGroup:
    """One TID 1500 measurement group: a finding with its tracking identity, site and evidence.

    ``tracking_id`` is human readable (e.g. "lesion 3"); ``tracking_uid`` a UID that stays the same for the
    same finding across reports (see :func:`stable_uid`). Evidence is a ``segment_label`` of the result's
    label map (volumetric) and/or image ``regions`` (planar).
    """

    tracking_id: str
    tracking_uid: str
    finding: Code
    finding_site: Code | None = None
    laterality: Code | None = None
    measurements: list[Measurement] = field(default_factory=list)
    qualitative: list[QualitativeFinding] = field(default_factory=list)
    segment_label: int | None = None
    regions: list[ImageRegion] = field(default_factory=list)


@dataclass
class PipelineResult:
    """What ``run`` returns. ``produced_by`` says which path (classical or learned) produced it."""

    produced_by: ProducedBy
    groups: list[FindingGroup] = field(default_factory=list)
    label_map: LabelMap | None = None
    summary_image: npt.NDArray[np.uint8] | None = None
    summary_title: str = ""
    text: str = ""
    derived_images: list[DerivedImage] = field(default_factory=list)
    prior_study_uids: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.summary_image is not None and (self.summary_image.ndim != 3 or self.summary_image.shape[2] != 3):
            raise ValidationError("PipelineResult.summary_image must be RGB (rows, columns, 3) uint8")
        ids = [g.tracking_uid for g in self.groups]
        if len(set(ids)) != len(ids):
            raise ValidationError("PipelineResult.groups must have distinct tracking UIDs")


# --------------------------------------------------------------------------------------------- the contract
@runtime_checkable
class Pipeline(Protocol):
    """What every pipeline object provides. Register it under the ``dicomnode.pipelines`` entry point.

    ``requires`` names upstream pipelines whose results are passed in ``inputs.upstream`` (chaining);
    ``priors`` (optional) asks the node for earlier studies of the same patient.
    """

    name: str
    version: str
    description: str
    selector: Selector
    produces: frozenset[OutputKind]
    requires: tuple[str, ...]
    priors: PriorSpec | None

    def is_available(self) -> tuple[bool, str]: ...

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult: ...


# --------------------------------------------------------------------------------------------- weights
def verified_weights(ctx: RunContext, filename: str, sha256: str) -> Path:
    """The path of a weights file in ``ctx.weights_dir`` whose SHA-256 matches ``sha256``.

    Raises :class:`dicomnode.errors.WeightsError` when the directory or file is missing or the checksum
    differs, so a pipeline can fall back to its classical path and say why.
    """
    from dicomnode.plugins.weights import verify_file

    if ctx.weights_dir is None:
        from dicomnode.errors import WeightsError

        raise WeightsError(f"no weights directory configured for {filename}")
    return verify_file(ctx.weights_dir / filename, sha256)


@runtime_checkable
class TrainablePipeline(Pipeline, Protocol):
    """A pipeline with a learned part offers ``dicomnode train NAME --data DIR --output DIR``.

    ``train`` writes a weights file into ``output_dir`` and returns its path; the file's SHA-256 goes into
    the config so that :func:`verified_weights` accepts it.
    """

    def train(self, data_dir: Path, output_dir: Path, options: Mapping[str, str]) -> Path: ...
