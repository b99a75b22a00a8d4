"""An :class:`Analysis` as contract results: the bone label map, a fracture label map, one finding group per
fracture (3D box and centre in patient mm, length, confidence, bone, rib number, type), the skeleton group,
and "fracture detection not installed" as a qualitative finding when there is no detector."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from dicomnode.plugins.api import (
    Code,
    FindingGroup,
    LabelMap,
    Measurement,
    NotAssessable,
    ProducedBy,
    QualitativeFinding,
    Region3D,
    Segment,
    SegmentRef,
    Volume,
    stable_uid,
)
from pipelines.ct_fracture import codes
from pipelines.ct_fracture import morphology as morph
from pipelines.ct_fracture.analysis import Analysis, Fracture
from pipelines.ct_fracture.anatomy import METAL, Bone

BONES_MAP, FRACTURES_MAP = "bones", "fractures"


def bone_code(bone: Bone) -> Code:
    if bone.kind == "metal":
        return codes.METAL
    if bone.kind == "limb":
        return codes.UPPER_LIMB_BONE if "upper" in bone.name else codes.LOWER_LIMB_BONE
    return {"spine": codes.SPINE, "rib": codes.RIB, "sternum": codes.STERNUM, "pelvis": codes.PELVIS}.get(
        bone.kind, codes.BONE
    )


def laterality(side: str | None) -> Code | None:
    return {"left": codes.LEFT, "right": codes.RIGHT}.get(side or "")


def bones_label_map(analysis: Analysis, volume: Volume) -> LabelMap | None:
    present = set(np.unique(analysis.skeleton.labels).tolist()) - {0}
    segments = []
    for label in sorted(present):
        bone = analysis.skeleton.bone(label)
        if bone is None:
            continue
        category = codes.PHYSICAL_OBJECT if label == METAL else codes.ANATOMICAL_STRUCTURE
        segments.append(Segment(label, bone.name, category, bone_code(bone)))
    if not segments:
        return None
    return LabelMap.on_volume(analysis.skeleton.labels, segments, volume, name=BONES_MAP)


def fractures_label_map(analysis: Analysis, volume: Volume) -> LabelMap | None:
    """Fracture k: the bone (grown by 2 mm) inside its box, or the whole box where no bone voxel is in it."""
    if not analysis.fractures:
        return None
    labels = np.zeros(volume.array.shape, dtype=np.uint8)
    bone = (analysis.skeleton.labels > 0) & (analysis.skeleton.labels != METAL)
    grown = morph.dilate(bone, morph.radius_voxels(2.0, volume.spacing))
    segments = []
    for k, fracture in enumerate(analysis.fractures[:255], start=1):
        sl = _box_slices(fracture.box, labels.shape)
        region = grown[sl]
        labels[sl][region if region.any() else np.ones_like(region)] = k
        segments.append(
            Segment(
                k, f"Fracture {k}", codes.ANATOMICAL_STRUCTURE, codes.FRACTURE, f"fracture {k}", _uid(volume, fracture)
            )
        )
    return LabelMap.on_volume(labels, segments, volume, name=FRACTURES_MAP)


def _box_slices(box: npt.NDArray[np.float64], shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    lo = [max(0, int(np.floor(box[a]))) for a in range(3)]
    hi = [min(shape[a], max(lo[a] + 1, int(np.ceil(box[a + 3])))) for a in range(3)]
    return slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2])


def _uid(volume: Volume, fracture: Fracture) -> str:
    centre = volume.index_to_patient(fracture.centre)
    key = ",".join(f"{v:.0f}" for v in centre)
    return stable_uid("ct_fracture", volume.frame_of_reference_uid or volume.sources[0].series_instance_uid, key)


def box_patient(
    volume: Volume, box: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The axis-aligned patient-space box (mm) spanned by the voxel box's eight corners (voxel edges)."""
    lo, hi = box[:3] - 0.5, box[3:] - 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    world = volume.index_to_patient(corners)
    return world.min(axis=0), world.max(axis=0)


def fracture_group(k: int, fracture: Fracture, volume: Volume, model_name: str, fractures_map: bool) -> FindingGroup:
    low, high = box_patient(volume, fracture.box)
    frame = volume.frame_of_reference_uid or ""
    regions = []
    if frame:
        centre = volume.index_to_patient(fracture.centre)
        regions = [Region3D.box(low.tolist(), high.tolist(), frame), Region3D.point(centre.tolist(), frame)]
    bone = fracture.bone
    measurements = [Measurement(codes.LENGTH, float(np.max(high - low)), codes.MM, produced_by=ProducedBy.LEARNED)]
    if bone is not None and bone.rib_number is not None:
        measurements.append(
            Measurement(codes.RIB_NUMBER, float(bone.rib_number), codes.NO_UNITS, produced_by=ProducedBy.CLASSICAL)
        )
    qualitative = []
    if fracture.type is not None:
        qualitative.append(QualitativeFinding(codes.FRACTURE_TYPE, codes.TYPES[fracture.type]))
        method = codes.TYPED_BY_NETWORK if fracture.typed_by == "learned" else codes.TYPED_BY_METAL_CUE
        qualitative.append(QualitativeFinding(codes.TYPING_METHOD, method))
    if fracture.metal_mm is not None:
        qualitative.append(QualitativeFinding(codes.METAL_NEARBY, codes.PRESENT))
        measurements.append(
            Measurement(codes.METAL_DISTANCE, round(fracture.metal_mm, 1), codes.MM, produced_by=ProducedBy.CLASSICAL)
        )
    where = bone.name.lower() if bone is not None else "bone"
    return FindingGroup(
        tracking_id=f"fracture {k}: {where}",
        tracking_uid=_uid(volume, fracture),
        finding=codes.FRACTURE,
        finding_site=bone_code(bone) if bone is not None else codes.BONE,
        laterality=laterality(bone.side if bone is not None else None),
        measurements=measurements,
        qualitative=qualitative,
        segment=SegmentRef(FRACTURES_MAP, k) if fractures_map else None,
        regions_3d=regions,
        confidence=min(1.0, max(0.0, fracture.score)),
        produced_by=ProducedBy.LEARNED,
        model=model_name,
    )


def skeleton_group(analysis: Analysis, volume: Volume) -> FindingGroup:
    bones = analysis.skeleton.bones.values()
    left = len({b.label for b in bones if b.kind == "rib" and b.side == "left"})
    right = len({b.label for b in bones if b.kind == "rib" and b.side == "right"})
    bone_voxels = int(((analysis.skeleton.labels > 0) & (analysis.skeleton.labels != METAL)).sum())
    path = ProducedBy.LEARNED if analysis.bone_path == "learned" else ProducedBy.CLASSICAL
    numbering = analysis.skeleton.numbering
    rib_code = (
        codes.RIBS_FROM_TWELFTH
        if "twelfth" in numbering
        else codes.RIBS_FROM_FIRST
        if "first" in numbering
        else codes.RIBS_NOT_NUMBERED
    )
    method = codes.LEARNED_SEGMENTATION if path is ProducedBy.LEARNED else codes.CLASSICAL_SEGMENTATION
    return FindingGroup(
        tracking_id="skeleton",
        tracking_uid=stable_uid("ct_fracture", "skeleton", volume.sources[0].sop_instance_uid),
        finding=codes.SKELETON,
        finding_site=codes.BONE,
        measurements=[
            Measurement(codes.VOLUME, round(bone_voxels * volume.voxel_volume_ml, 1), codes.ML),
            Measurement(codes.RIB_COUNT_LEFT, float(left), codes.NO_UNITS, produced_by=ProducedBy.CLASSICAL),
            Measurement(codes.RIB_COUNT_RIGHT, float(right), codes.NO_UNITS, produced_by=ProducedBy.CLASSICAL),
        ],
        qualitative=[
            QualitativeFinding(codes.BONE_SEGMENTATION_METHOD, method),
            QualitativeFinding(codes.RIB_NUMBERING, rib_code),
        ],
        produced_by=path,
    )


def detection_missing_group(volume: Volume) -> FindingGroup:
    """Says, as a coded finding, that no fracture detection was done: never mistaken for "no fracture"."""
    return FindingGroup(
        tracking_id="fracture detection",
        tracking_uid=stable_uid("ct_fracture", "detection-status", volume.sources[0].sop_instance_uid),
        finding=codes.FRACTURE_DETECTION,
        qualitative=[QualitativeFinding(codes.DETECTION_STATUS, NotAssessable.MODEL_NOT_INSTALLED)],
        produced_by=ProducedBy.CLASSICAL,
    )
