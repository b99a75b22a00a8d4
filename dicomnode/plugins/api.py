"""The pipeline contract (version 2): the one module a pipeline imports from the node.

A pipeline declares what it accepts (a :class:`Selector`), what it produces, what it needs (weights, GPU,
memory: :class:`Requirements`), what it hands to other pipelines (:class:`Provides`) and takes from them
(:class:`Consumes`), and implements ``run(inputs, ctx) -> PipelineResult``. It returns typed results only;
the node turns them into SR, SEG and summary images, stores them and delivers them. A pipeline never touches
the database, the network or highdicom. ``docs/writing-a-pipeline.md`` walks through a complete example.

This module imports nothing of the node's runner, encoder or server: only :mod:`dicomnode.imaging` (reading
images) and :mod:`dicomnode.errors`.
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

from dicomnode.errors import PipelineInputError, ValidationError, WeightsError
from dicomnode.imaging import Cine, FrameSource, Volume, cine_stacks, load_cine, load_volume, time_point_count
from dicomnode.imaging.headers import has_pixels, number_of_frames, read_full, sort_by_instance_number
from dicomnode.imaging.pixels import modality_frames

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = [
    "API_VERSION",
    "LOCAL_SCHEME",
    "Cine",
    "Code",
    "CommandPipeline",
    "Compute",
    "Consumes",
    "DerivedImage",
    "Environment",
    "EvaluablePipeline",
    "FindingGroup",
    "FrameSource",
    "ImageRegion",
    "ImageSeries",
    "LabelMap",
    "Measurement",
    "ModelInfo",
    "NotAssessable",
    "Outcome",
    "OutputKind",
    "Pipeline",
    "PipelineBase",
    "PipelineInputError",
    "PipelineInputs",
    "PipelineResult",
    "PriorSpec",
    "PriorStudy",
    "ProducedBy",
    "Provides",
    "QualitativeFinding",
    "Region3D",
    "Requirements",
    "RunContext",
    "Segment",
    "SegmentRef",
    "Selector",
    "TrainablePipeline",
    "Trigger",
    "Volume",
    "WeightsSpec",
    "WeightsStatus",
    "local_code",
    "required_pipelines",
    "stable_uid",
]

API_VERSION = "2"

# The one private coding scheme of the node (a "99" prefix marks a local scheme, PS3.16 section 8). The
# encoder declares it in every SR's CodingSchemeIdentificationSequence; pipelines spell it through
# :func:`local_code`, never by hand.
LOCAL_SCHEME = "99DCMNODE"


# --------------------------------------------------------------------------------------------- vocabulary
class OutputKind(enum.Enum):
    """What a pipeline can produce; the encoder builds DICOM objects of each kind (one SEG per label map)."""

    SR = "SR"
    SEG = "SEG"
    SUMMARY = "SUMMARY"


class Trigger(enum.Enum):
    """Whether a pipeline runs once per complete series or once per complete study."""

    SERIES = "series"
    STUDY = "study"


class ProducedBy(enum.Enum):
    """Which path produced a result or a part of it: it goes into result.json, the SR and the job row.

    MIXED is derived, never declared: a result whose parts come from both paths.
    """

    CLASSICAL = "classical"
    LEARNED = "learned"
    MIXED = "mixed"


class Compute(enum.Enum):
    """Where a pipeline can run."""

    CPU = "cpu"  # never uses a GPU
    GPU_OPTIONAL = "gpu_optional"  # uses a GPU when the worker has one, else the CPU
    GPU_REQUIRED = "gpu_required"  # only workers with a GPU claim its jobs


class Outcome(enum.Enum):
    """Whether the pipeline could assess the input. NOT_ASSESSABLE is a result (reported, never retried)."""

    ASSESSED = "assessed"
    NOT_ASSESSABLE = "not_assessable"


@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM Code Sequence item): value, scheme designator, meaning."""

    value: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        if not self.value or not self.scheme or not self.meaning:
            raise ValidationError(f"Code needs value, scheme and meaning, got {self!r}")


def local_code(value: str, meaning: str) -> Code:
    """A concept of the node's private scheme, for what no standard (DCM, SCT, UCUM, LN) codes.

    The value must fit Code Value (SH, 16 characters): a longer one is written as Long Code Value, which
    viewers such as OHIF do not read (they drop the whole content item).
    """
    if not 0 < len(value) <= 16:
        raise ValueError(f"local code value {value!r} must have 1 to 16 characters (Code Value is SH)")
    return Code(value, LOCAL_SCHEME, meaning)


class NotAssessable:
    """Reasons a pipeline gives for "not assessable"; pipelines may add their own with :func:`local_code`."""

    OUTSIDE_FIELD_OF_VIEW = local_code("na-fov", "Anatomy not fully in the field of view")
    WRONG_ANATOMY = local_code("na-anatomy", "Image does not show the expected anatomy")
    TOO_FEW_FRAMES = local_code("na-frames", "Too few frames or time points")
    INSUFFICIENT_QUALITY = Code("110531", "DCM", "Insufficient quality for interpretation")
    MISSING_INFORMATION = local_code("na-header", "Required header information missing")
    MODEL_NOT_INSTALLED = local_code("na-model", "Required model weights not installed")
    UPSTREAM_NOT_ASSESSABLE = local_code("na-upstream", "Input from an upstream analysis not assessable")


def stable_uid(*parts: str) -> str:
    """A DICOM UID derived from ``parts`` (2.25 form): the same parts always give the same UID.

    Used for tracking UIDs that must stay the same across reports of the same finding.
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
    (e.g. "LOCALIZER"). ``max_slice_thickness_mm`` applies to volumes. ``min_frames`` counts frames (an
    enhanced multi-frame instance has many); ``min_time_points`` the phases of a cine at one position.
    """

    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    image_type_includes: tuple[str, ...] = ()
    image_type_excludes: tuple[str, ...] = ()
    series_description: str | None = None
    study_description: str | None = None
    min_instances: int = 1
    min_frames: int = 1
    min_time_points: int = 1
    max_slice_thickness_mm: float | None = None
    trigger: Trigger = Trigger.SERIES

    def __post_init__(self) -> None:
        for label in ("min_instances", "min_frames", "min_time_points"):
            if getattr(self, label) < 1:
                raise ValidationError(f"Selector.{label} must be >= 1, got {getattr(self, label)}")


@dataclass(frozen=True)
class PriorSpec:
    """A pipeline that compares with earlier studies of the same patient declares which it wants."""

    selector: Selector
    max_priors: int = 3
    max_age_days: int | None = None


# --------------------------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class WeightsSpec:
    """One weights file a learned part needs.

    The file is looked up in the configured weights directory as ``filename``, or as the value of the
    pipeline parameter ``file_param`` when set; its SHA-256 comes from the parameter ``sha256_param``
    (``[pipelines.params.<pipeline>]`` in the config). The node verifies it once per worker, not per job.
    """

    name: str
    filename: str
    sha256_param: str = ""
    file_param: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.filename:
            raise ValidationError("WeightsSpec needs a name and a filename")
        if not self.sha256_param:
            object.__setattr__(self, "sha256_param", f"{self.name}_sha256")
        if not self.file_param:
            object.__setattr__(self, "file_param", f"{self.name}_file")


@dataclass(frozen=True)
class Requirements:
    """What a pipeline needs to run. ``weights_required``: without verified weights it cannot run at all
    (else it runs its classical path and says so). ``memory_mb``: peak memory of one job, an estimate."""

    compute: Compute = Compute.CPU
    memory_mb: int = 1024
    weights: tuple[WeightsSpec, ...] = ()
    weights_required: bool = False

    def __post_init__(self) -> None:
        names = [w.name for w in self.weights]
        if len(set(names)) != len(names):
            raise ValidationError(f"Requirements.weights names must be unique, got {names}")
        if self.memory_mb < 1:
            raise ValidationError("Requirements.memory_mb must be >= 1")


@dataclass(frozen=True)
class Provides:
    """Something a pipeline hands to pipelines downstream: a :class:`DerivedImage` of this name in every
    assessed result."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class Consumes:
    """What a pipeline takes from an upstream pipeline: its derived image ``name``. The upstream runs as its
    own job on the same series version, once; its stored result is what arrives in ``inputs.upstream``."""

    pipeline: str
    name: str


@dataclass(frozen=True)
class WeightsStatus:
    """Whether one declared weights file is usable here: ``ok`` with its ``path``, else the ``reason``."""

    name: str
    ok: bool
    reason: str
    path: Path | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Environment:
    """What the node tells ``is_available``: the configured parameters, the weights' status, the device."""

    params: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, WeightsStatus] = field(default_factory=dict)
    gpu_available: bool = False
    device: str = "cpu"


# --------------------------------------------------------------------------------------------- inputs
class ImageSeries:
    """One series handed to a pipeline: its headers (sorted by InstanceNumber) and their files.

    Headers arrive without pixel data; pixels are read from the files only when asked for, with
    :meth:`volume` (3D, CT/MR), :meth:`frames` (2D images) or :meth:`cine` (positions x time).
    """

    def __init__(self, datasets: Sequence[Dataset], files: Sequence[Path] = (), body_part: str | None = None) -> None:
        if not datasets:
            raise PipelineInputError("ImageSeries needs at least one dataset")
        if files and len(files) != len(datasets):
            raise ValidationError(f"ImageSeries has {len(datasets)} datasets but {len(files)} files")
        self.datasets: list[Dataset] = list(datasets)
        self.files: list[Path] = list(files)
        self.body_part = body_part
        self._volume: Volume | None = None
        self._cine: Cine | None = None

    @property
    def first(self) -> Dataset:
        return self.datasets[0]

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", "") or "")

    @property
    def series_instance_uid(self) -> str:
        return str(self.first.SeriesInstanceUID)

    @property
    def study_instance_uid(self) -> str:
        return str(self.first.StudyInstanceUID)

    @property
    def frame_count(self) -> int:
        return sum(number_of_frames(ds) for ds in self.datasets)

    def time_points(self) -> int:
        """Time points at the most common slice position (1 for a plain volume), from headers alone."""
        return time_point_count(self.datasets)

    def instance_frames(self, ds: Dataset) -> npt.NDArray[np.float32]:
        """Modality frames of one header: from the data set itself when it holds pixels, else its file."""
        if has_pixels(ds):
            return modality_frames(ds)
        index = next((i for i, d in enumerate(self.datasets) if d is ds), None)
        if index is None or index >= len(self.files):
            raise PipelineInputError(f"no pixel data and no file for {ds.get('SOPInstanceUID', '?')}")
        return modality_frames(read_full(self.files[index]))

    def volume(self) -> Volume:
        """The series as a 3D volume sorted along the slice normal; cached."""
        if self._volume is None:
            self._volume = load_volume(self.datasets, self.instance_frames)
        return self._volume

    def cine(self) -> Cine:
        """The series as a cine: frames grouped by slice position and ordered by time; cached."""
        if self._cine is None:
            self._cine = load_cine(self.datasets, self.instance_frames)
        return self._cine

    def frames(self) -> list[npt.NDArray[np.float32]]:
        """Every frame of every instance as 2D modality values, instances by InstanceNumber."""
        out: list[npt.NDArray[np.float32]] = []
        for ds in sort_by_instance_number(self.datasets):
            out.extend(list(self.instance_frames(ds)))
        return out

    def release(self) -> None:
        """Drop cached pixels (a study-level pipeline done with one series frees its memory)."""
        self._volume = None
        self._cine = None


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
    source_frame_number: int = 1


@dataclass
class PipelineInputs:
    """Everything a pipeline's ``run`` receives.

    ``series``: the triggering series (one for a series trigger, all of the study's for a study trigger;
    headers only until a pipeline asks for pixels). ``priors``: earlier studies, newest first, when the
    pipeline declared a :class:`PriorSpec`. ``upstream``: the stored results of the pipelines it consumes
    from, by pipeline name.
    """

    series: list[ImageSeries]
    priors: list[PriorStudy] = field(default_factory=list)
    upstream: dict[str, PipelineResult] = field(default_factory=dict)

    @property
    def primary(self) -> ImageSeries:
        return self.series[0]

    def derived(self, pipeline: str, name: str) -> DerivedImage:
        """The derived image ``name`` of upstream ``pipeline``; PipelineInputError when it is absent."""
        result = self.upstream.get(pipeline)
        if result is None:
            raise PipelineInputError(f"no upstream result of {pipeline!r} (declare it in consumes)")
        image = result.derived(name)
        if image is None:
            raise PipelineInputError(f"upstream {pipeline!r} provided no derived image {name!r}")
        return image

    def cine(self) -> Cine:
        """One cine from the input: the series' own when one series holds it, else the largest stack of
        series sharing a frame of reference and orientation (one series per slice position)."""
        if len(self.series) == 1:
            return self.series[0].cine()
        stacks = cine_stacks([s.datasets for s in self.series])
        if not stacks:
            raise PipelineInputError("no series to build a cine from")
        members = [self.series[i] for i in stacks[0]]
        if len(members) == 1:
            return members[0].cine()
        datasets = [ds for s in members for ds in s.datasets]
        owner = {id(ds): s for s in members for ds in s.datasets}
        return load_cine(datasets, lambda ds: owner[id(ds)].instance_frames(ds))


@dataclass
class RunContext:
    """What the node tells a pipeline about this run.

    ``params`` come from the config (and ``--param``); ``weights`` says, per declared :class:`WeightsSpec`,
    whether a verified file is there; ``device`` is the torch device chosen for this worker ("cpu",
    "cuda:0"); ``state`` is what the pipeline's ``setup`` returned (loaded once per worker, reused across
    jobs); ``work_dir`` is scratch space for this run.
    """

    params: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, WeightsStatus] = field(default_factory=dict)
    device: str = "cpu"
    work_dir: Path | None = None
    job_id: int | None = None
    state: Any = None

    def weights_path(self, name: str) -> Path:
        """The verified file of the declared weights ``name``; WeightsError with the reason when unusable."""
        status = self.weights.get(name)
        if status is None:
            raise WeightsError(f"weights {name!r} are not declared in the pipeline's requirements")
        if not status.ok or status.path is None:
            raise WeightsError(f"weights {name!r}: {status.reason}")
        return status.path


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Measurement:
    """A numeric measurement: concept name, value, UCUM unit (e.g. Code("mL", "UCUM", "milliliter")).

    ``source`` ties it to one frame (a per-frame index of a cine); ``produced_by`` overrides the group's
    path for this one value (a classical score computed from learned grades stays classical).
    """

    name: Code
    value: float
    unit: Code
    derivation: Code | None = None
    method: Code | None = None
    source: FrameSource | None = None
    produced_by: ProducedBy | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.value):
            raise ValidationError(f"Measurement {self.name.meaning!r} has no finite value ({self.value})")
        if self.produced_by is ProducedBy.MIXED:
            raise ValidationError("Measurement.produced_by is classical or learned; MIXED is derived")


@dataclass(frozen=True)
class QualitativeFinding:
    """A coded finding: concept name and coded value."""

    name: Code
    value: Code


_REGION_2D = frozenset({"POINT", "POLYLINE", "CIRCLE", "ELLIPSE", "MULTIPOINT"})
_REGION_3D = frozenset({"POINT", "MULTIPOINT", "POLYLINE", "POLYGON", "ELLIPSE", "ELLIPSOID", "BOX"})


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
        if self.graphic_type not in _REGION_2D:
            raise ValidationError(f"ImageRegion.graphic_type must be one of {sorted(_REGION_2D)}")
        if not self.points:
            raise ValidationError("ImageRegion.points must not be empty")


@dataclass(frozen=True)
class Region3D:
    """A region in patient coordinates (x, y, z in mm) of a frame of reference: SCOORD3D in the SR.

    ``graphic_type``: POINT, MULTIPOINT, POLYLINE, POLYGON (planar), ELLIPSE (4 points: the two axes),
    ELLIPSOID (6 points: the three axes' end points), or BOX: two opposite corners (min and max) of an
    axis-aligned box in patient coordinates, written as the six faces of a volume surface.
    """

    graphic_type: str
    points: tuple[tuple[float, float, float], ...]
    frame_of_reference_uid: str

    def __post_init__(self) -> None:
        if self.graphic_type not in _REGION_3D:
            raise ValidationError(f"Region3D.graphic_type must be one of {sorted(_REGION_3D)}")
        if not self.points or any(len(p) != 3 for p in self.points):
            raise ValidationError("Region3D.points must be (x, y, z) triplets")
        if not self.frame_of_reference_uid:
            raise ValidationError("Region3D needs the frame of reference of its coordinates")
        expected = {"POINT": 1, "ELLIPSE": 4, "ELLIPSOID": 6, "BOX": 2}.get(self.graphic_type)
        if expected is not None and len(self.points) != expected:
            raise ValidationError(f"Region3D {self.graphic_type} needs {expected} points, got {len(self.points)}")

    @classmethod
    def box(cls, corner_a: Sequence[float], corner_b: Sequence[float], frame_of_reference_uid: str) -> Region3D:
        low = tuple(float(min(a, b)) for a, b in zip(corner_a, corner_b, strict=True))
        high = tuple(float(max(a, b)) for a, b in zip(corner_a, corner_b, strict=True))
        return cls("BOX", (low, high), frame_of_reference_uid)  # type: ignore[arg-type]

    @classmethod
    def point(cls, xyz: Sequence[float], frame_of_reference_uid: str) -> Region3D:
        return cls("POINT", (tuple(float(v) for v in xyz),), frame_of_reference_uid)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Segment:
    """One segment of a label map: its label value in the array and its coded description.

    ``colour`` (RGB) is the colour viewers are told to show it in (the SEG's recommended display colour);
    without one, the node's palette colour for its label (``dicomnode.plugins.drawing.segment_colour``).
    """

    label: int
    name: str
    category: Code
    type: Code
    tracking_id: str | None = None
    tracking_uid: str | None = None
    colour: tuple[int, int, int] | None = None


@dataclass
class LabelMap:
    """Exclusive labels on source frames: ``array`` is (frames, rows, columns), 0 = background, and
    ``sources[k]`` is the source frame that plane k lies on. Each label map becomes its own SEG, so
    overlapping structures (bones and fracture regions) go into separate label maps of one result.

    Build one with :meth:`on_volume`, :meth:`on_cine` or :meth:`on_image`. ``name`` identifies it in the
    result (a :class:`SegmentRef` names it) and in the SEG's series description.
    """

    array: npt.NDArray[np.integer[Any]]
    segments: list[Segment]
    sources: list[FrameSource]
    name: str = "segmentation"
    produced_by: ProducedBy | None = None  # the path that drew it, when not the result's

    def __post_init__(self) -> None:
        if self.produced_by is ProducedBy.MIXED:
            raise ValidationError("LabelMap.produced_by is classical or learned; MIXED is derived")
        labels = [s.label for s in self.segments]
        if len(set(labels)) != len(labels) or any(label < 1 for label in labels):
            raise ValidationError(f"LabelMap segment labels must be unique and >= 1, got {labels}")
        if self.array.ndim != 3:
            raise ValidationError(f"LabelMap.array must be (frames, rows, columns), got shape {self.array.shape}")
        if len(self.sources) != self.array.shape[0]:
            raise ValidationError(f"LabelMap has {self.array.shape[0]} planes but {len(self.sources)} sources")
        if not np.issubdtype(self.array.dtype, np.integer):
            raise ValidationError(f"LabelMap.array must hold integers, got {self.array.dtype}")

    @classmethod
    def on_volume(
        cls,
        array: npt.NDArray[np.integer[Any]],
        segments: list[Segment],
        volume: Volume,
        name: str = "segmentation",
        produced_by: ProducedBy | None = None,
    ) -> LabelMap:
        if array.shape != volume.array.shape:
            raise ValidationError(f"label map shape {array.shape} differs from the volume's {volume.array.shape}")
        return cls(array, segments, list(volume.sources), name, produced_by)

    @classmethod
    def on_cine(
        cls,
        array: npt.NDArray[np.integer[Any]],
        segments: list[Segment],
        cine: Cine,
        name: str = "segmentation",
        produced_by: ProducedBy | None = None,
    ) -> LabelMap:
        """``array`` is (position, time, row, column) like the cine's."""
        if array.shape != cine.array.shape:
            raise ValidationError(f"label map shape {array.shape} differs from the cine's {cine.array.shape}")
        flat = array.reshape((-1, *array.shape[2:]))
        return cls(flat, segments, cine.flat_sources(), name, produced_by)

    @classmethod
    def on_image(
        cls,
        array: npt.NDArray[np.integer[Any]],
        segments: list[Segment],
        source: FrameSource,
        name: str = "segmentation",
        produced_by: ProducedBy | None = None,
    ) -> LabelMap:
        if array.ndim != 2:
            raise ValidationError(f"on_image takes a 2D array, got shape {array.shape}")
        return cls(array[np.newaxis], segments, [source], name, produced_by)

    @property
    def source_series_uids(self) -> list[str]:
        return list(dict.fromkeys(s.series_instance_uid for s in self.sources if s.series_instance_uid))


@dataclass(frozen=True)
class SegmentRef:
    """A segment of one of the result's label maps: the map's ``name`` and the segment's ``label``."""

    label_map: str
    label: int


@dataclass(frozen=True)
class ModelInfo:
    """A learned model a result used: recorded in the SR's algorithm identification and in result.json."""

    name: str
    version: str
    sha256: str


@dataclass
class FindingGroup:
    """One TID 1500 measurement group: a finding with its tracking identity, site and evidence.

    ``tracking_id`` is human readable (e.g. "lesion 3"); ``tracking_uid`` a UID that stays the same for the
    same finding across reports (see :func:`stable_uid`). Evidence: a ``segment`` of one of the result's
    label maps (volumetric), image ``regions`` (planar, on source images) and/or ``regions_3d`` (patient
    coordinates). ``confidence`` (0..1) is written as a coded "Certainty of Finding". ``produced_by``
    overrides the result's path for this group; ``model`` names the :class:`ModelInfo` that produced it.
    """

    tracking_id: str
    tracking_uid: str
    finding: Code
    finding_site: Code | None = None
    laterality: Code | None = None
    measurements: list[Measurement] = field(default_factory=list)
    qualitative: list[QualitativeFinding] = field(default_factory=list)
    segment: SegmentRef | None = None
    regions: list[ImageRegion] = field(default_factory=list)
    regions_3d: list[Region3D] = field(default_factory=list)
    confidence: float | None = None
    produced_by: ProducedBy | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise ValidationError(f"FindingGroup.confidence must be in [0, 1], got {self.confidence}")
        if self.produced_by is ProducedBy.MIXED:
            raise ValidationError("FindingGroup.produced_by is classical or learned; MIXED is derived")


@dataclass
class PipelineResult:
    """What ``run`` returns.

    ``produced_by`` is the path of every part that does not say otherwise (classical or learned); the
    result's overall path (:attr:`overall_produced_by`) is derived from its parts. ``outcome`` is
    NOT_ASSESSABLE, with a coded reason, when the pipeline cannot assess this input: use
    :meth:`not_assessable` (no measurements then: a reader must never take a refusal for a value).
    """

    produced_by: ProducedBy
    groups: list[FindingGroup] = field(default_factory=list)
    label_maps: list[LabelMap] = field(default_factory=list)
    summary_image: npt.NDArray[np.uint8] | None = None
    summary_title: str = ""
    text: str = ""
    derived_images: list[DerivedImage] = field(default_factory=list)
    prior_study_uids: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome = Outcome.ASSESSED
    not_assessable_reason: Code | None = None
    models: list[ModelInfo] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.summary_image is not None and (self.summary_image.ndim != 3 or self.summary_image.shape[2] != 3):
            raise ValidationError("PipelineResult.summary_image must be RGB (rows, columns, 3) uint8")
        if self.produced_by is ProducedBy.MIXED:
            raise ValidationError("PipelineResult.produced_by is the default path of its parts; MIXED is derived")
        ids = [g.tracking_uid for g in self.groups]
        if len(set(ids)) != len(ids):
            raise ValidationError("PipelineResult.groups must have distinct tracking UIDs")
        names = [m.name for m in self.label_maps]
        if len(set(names)) != len(names):
            raise ValidationError(f"PipelineResult.label_maps must have distinct names, got {names}")
        self._check_references()
        if self.outcome is Outcome.NOT_ASSESSABLE:
            if self.not_assessable_reason is None:
                raise ValidationError("a NOT_ASSESSABLE result needs not_assessable_reason")
            if any(g.measurements for g in self.groups) or self.label_maps:
                raise ValidationError("a NOT_ASSESSABLE result carries no measurements and no label maps")

    def _check_references(self) -> None:
        maps = {m.name: m for m in self.label_maps}
        models = {m.name for m in self.models}
        for group in self.groups:
            ref = group.segment
            if ref is not None:
                label_map = maps.get(ref.label_map)
                if label_map is None or ref.label not in {s.label for s in label_map.segments}:
                    raise ValidationError(f"group {group.tracking_id!r} references segment {ref}, not in the result")
            if group.model is not None and group.model not in models:
                raise ValidationError(f"group {group.tracking_id!r} names model {group.model!r}, not in models")

    @classmethod
    def not_assessable(
        cls,
        reason: Code,
        text: str,
        *,
        produced_by: ProducedBy = ProducedBy.CLASSICAL,
        details: dict[str, Any] | None = None,
        summary_image: npt.NDArray[np.uint8] | None = None,
        groups: list[FindingGroup] | None = None,
    ) -> PipelineResult:
        """ "Cannot assess this input, because ``text``" (coded ``reason``): a result, never retried.

        ``groups`` may carry qualitative findings and regions that explain the refusal, never measurements.
        """
        return cls(
            produced_by=produced_by,
            groups=groups or [],
            text=text,
            details=details or {},
            summary_image=summary_image,
            outcome=Outcome.NOT_ASSESSABLE,
            not_assessable_reason=reason,
        )

    @property
    def assessed(self) -> bool:
        return self.outcome is Outcome.ASSESSED

    def part_paths(self) -> set[ProducedBy]:
        """The paths of the result's parts (groups, measurements, label maps), the default where a part is
        silent."""
        paths: set[ProducedBy] = {m.produced_by or self.produced_by for m in self.label_maps}
        for group in self.groups:
            group_path = group.produced_by or self.produced_by
            paths.add(group_path)
            paths.update(m.produced_by or group_path for m in group.measurements)
        return paths or {self.produced_by}

    @property
    def overall_produced_by(self) -> ProducedBy:
        paths = self.part_paths()
        return paths.pop() if len(paths) == 1 else ProducedBy.MIXED

    def label_map(self, name: str) -> LabelMap | None:
        return next((m for m in self.label_maps if m.name == name), None)

    def derived(self, name: str) -> DerivedImage | None:
        return next((d for d in self.derived_images if d.name == name), None)


# --------------------------------------------------------------------------------------------- the contract
@runtime_checkable
class Pipeline(Protocol):
    """What every pipeline object provides. Register it under the ``dicomnode.pipelines`` entry point.

    Subclass :class:`PipelineBase` for the defaults. ``setup`` is called once per worker (and again only when
    the parameters or weights change); what it returns (a loaded model) arrives as ``ctx.state`` in every
    ``run``. ``is_available`` answers for this host: the node has already checked declared weights and GPU
    needs, and passes what it found in ``env``.
    """

    name: str
    version: str
    description: str
    selector: Selector
    produces: frozenset[OutputKind]
    priors: PriorSpec | None
    requirements: Requirements
    provides: tuple[Provides, ...]
    consumes: tuple[Consumes, ...]

    def is_available(self, env: Environment) -> tuple[bool, str]: ...

    def setup(self, ctx: RunContext) -> Any: ...

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult: ...


class PipelineBase:
    """Defaults for a pipeline: no priors, CPU only, no weights, nothing provided or consumed, no setup.

    ``is_available`` reports the learned parts from ``env``: with ``weights_required`` the node has already
    marked the pipeline unavailable when they are missing; otherwise the classical path runs.
    """

    name: str
    version: str
    description: str
    selector: Selector
    produces: frozenset[OutputKind]
    priors: PriorSpec | None = None
    requirements: Requirements = Requirements()
    provides: tuple[Provides, ...] = ()
    consumes: tuple[Consumes, ...] = ()

    def is_available(self, env: Environment) -> tuple[bool, str]:
        if not self.requirements.weights:
            return True, "classical, no weights needed"
        parts = [f"{name}: {'ok' if s.ok else s.reason}" for name, s in sorted(env.weights.items())]
        return True, "; ".join(parts)

    def setup(self, ctx: RunContext) -> Any:
        return None

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        raise NotImplementedError


def required_pipelines(pipeline: Pipeline) -> tuple[str, ...]:
    """The upstream pipelines ``pipeline`` consumes from, in declaration order."""
    return tuple(dict.fromkeys(c.pipeline for c in pipeline.consumes))


@runtime_checkable
class TrainablePipeline(Pipeline, Protocol):
    """A pipeline with a learned part offers ``dicomnode train NAME --data DIR --output DIR``.

    ``train`` writes its weights files and a ``manifest.json`` (file name → sha256) into ``output_dir`` and
    returns the path of the main weights file; the SHA-256 goes into the config so the node accepts it.
    """

    def train(self, data_dir: Path, output_dir: Path, options: Mapping[str, str]) -> Path: ...


@runtime_checkable
class EvaluablePipeline(Pipeline, Protocol):
    """A pipeline that can be measured on a site's labelled data: ``dicomnode evaluate NAME --data DIR``.

    ``evaluate`` returns the challenge's metrics (JSON-safe: names → numbers or tables) for whatever path
    ``ctx`` makes available (learned with weights, else classical).
    """

    def evaluate(self, data_dir: Path, options: Mapping[str, str], ctx: RunContext) -> dict[str, Any]: ...


@runtime_checkable
class CommandPipeline(Pipeline, Protocol):
    """A pipeline with a tool a user runs by hand: ``dicomnode <command_name> ARGS...`` calls ``command``
    with ARGS (e.g. ``dicomnode bone-age score --standard tw3 --sex F --grades ...``). ``command`` parses its
    own arguments, prints its answer and returns the exit status; a user error raises a DicomNodeError
    (printed as one line by the CLI)."""

    command_name: str

    def command(self, argv: Sequence[str]) -> int: ...
