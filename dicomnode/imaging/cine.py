"""Cines from headers: frames grouped by slice position and ordered in time.

Works for a classic single-frame cine (one instance per position and phase), one enhanced multi-frame
instance (positions and times in its functional groups), and a cine stored as one series per slice position
(pass the datasets of every series; :func:`cine_stacks` groups series into stacks first).

Time order: trigger time when every frame at a position has a distinct one (NominalCardiacTriggerDelayTime
in enhanced images, TriggerTime in classic ones), else the temporal position index (FrameContentSequence /
TemporalPositionIdentifier), else InstanceNumber and frame number.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomnode.errors import PipelineInputError
from dicomnode.imaging.geometry import FrameRef, frame_geometry, frame_refs
from dicomnode.imaging.headers import pixel_spacing
from dicomnode.imaging.pixels import modality_frames
from dicomnode.imaging.types import Cine
from dicomnode.imaging.volume import frame_source

__all__ = ["cine_stacks", "load_cine", "time_point_count"]

PixelReader = Callable[[Dataset], npt.NDArray[np.float32]]

# Frames whose distances along the slice normal differ by less than this lie at one position (mm).
POSITION_TOLERANCE_MM = 0.05


def _group_positions(refs: Sequence[FrameRef]) -> list[list[FrameRef]]:
    ordered = sorted(refs, key=lambda r: r.distance)
    groups: list[list[FrameRef]] = []
    for ref in ordered:
        if groups and abs(ref.distance - groups[-1][0].distance) < POSITION_TOLERANCE_MM:
            groups[-1].append(ref)
        else:
            groups.append([ref])
    return groups


def _time_key(group: Sequence[FrameRef]) -> tuple[str, Callable[[FrameRef], tuple[float, ...]]]:
    triggers = [r.trigger_time_ms for r in group]
    if all(t is not None for t in triggers) and len(set(triggers)) == len(triggers):
        return "trigger time", lambda r: (float(r.trigger_time_ms or 0.0), float(r.instance_number))
    temporal = [r.temporal_index for r in group]
    if all(t is not None for t in temporal) and len(set(temporal)) == len(temporal):
        return "temporal position index", lambda r: (float(r.temporal_index or 0), float(r.instance_number))
    return "instance number", lambda r: (float(r.instance_number), float(r.frame_index))


def time_point_count(datasets: Sequence[Dataset]) -> int:
    """The number of time points at the most common slice position (from headers alone)."""
    if not datasets:
        return 0
    groups = _group_positions(frame_refs(datasets))
    return Counter(len(g) for g in groups).most_common(1)[0][0]


def load_cine(datasets: Sequence[Dataset], read_pixels: PixelReader = modality_frames) -> Cine:
    """The frames of ``datasets`` as a cine (position, time, row, column).

    Positions with a different number of time points than the most common one are dropped (named in
    ``notes``), so every position covers the same cycle.
    """
    if not datasets:
        raise PipelineInputError("no datasets to load as a cine")
    refs = frame_refs(datasets)
    groups = _group_positions(refs)
    n_times = Counter(len(g) for g in groups).most_common(1)[0][0]
    notes: list[str] = []
    kept = [g for g in groups if len(g) == n_times]
    if len(kept) < len(groups):
        dropped = [f"{g[0].distance:.1f} mm ({len(g)} frames)" for g in groups if len(g) != n_times]
        notes.append(f"positions dropped for a different number of time points than {n_times}: {dropped}")
    orders = set()
    ordered_groups = []
    for group in kept:
        order, key = _time_key(group)
        orders.add(order)
        ordered_groups.append(sorted(group, key=key))
    decoded = {id(ds): read_pixels(ds) for ds in {id(r.dataset): r.dataset for g in kept for r in g}.values()}
    shapes = {decoded[id(r.dataset)].shape[1:] for g in ordered_groups for r in g}
    if len(shapes) != 1:
        raise PipelineInputError(f"cine frames differ in size: {sorted(shapes)}")
    array = np.stack(
        [np.stack([decoded[id(r.dataset)][r.frame_index] for r in group]) for group in ordered_groups]
    ).astype(np.float32, copy=False)
    first = ordered_groups[0][0]
    distances = [g[0].distance for g in ordered_groups]
    spacing = pixel_spacing(first.dataset, first.frame_index)
    if spacing is None:
        notes.append("no pixel spacing in the headers: lengths and areas are in pixels")
    return Cine(
        array=array,
        sources=[[frame_source(r.dataset, r.frame_index) for r in g] for g in ordered_groups],
        trigger_times_ms=[[r.trigger_time_ms for r in g] for g in ordered_groups],
        positions=[tuple(float(v) for v in g[0].position) for g in ordered_groups],  # type: ignore[misc]
        orientation=first.orientation,
        pixel_spacing_mm=spacing[0] if spacing else None,
        slice_spacing_mm=float(np.median(np.diff(distances))) if len(distances) > 1 else None,
        frame_of_reference_uid=str(first.dataset.get("FrameOfReferenceUID", "") or ""),
        time_order=" / ".join(sorted(orders)),
        notes=notes,
    )


def _orientation_key(ds: Dataset) -> tuple[float, ...]:
    return tuple(round(v, 3) for v in frame_geometry(ds, 0)[1])


def cine_stacks(series: Sequence[Sequence[Dataset]]) -> list[list[int]]:
    """Which series (by index) form one stack: same frame of reference and same orientation.

    For sites that store each slice position of a cine as its own series: the stacks are the inputs of
    :func:`load_cine`, largest first.
    """
    stacks: dict[tuple[object, ...], list[int]] = {}
    for index, datasets in enumerate(series):
        if not datasets:
            continue
        first = datasets[0]
        key = (str(first.get("FrameOfReferenceUID", "") or ""), _orientation_key(first))
        stacks.setdefault(key, []).append(index)
    return sorted(stacks.values(), key=len, reverse=True)
