"""The patent's three marking types: which region of a study to mark, from abnormal-region size and count.

Type 1: the largest abnormal region is at least ``large_region_ml`` → mark the normal region.
Type 2: otherwise, at least ``many_count`` abnormal regions → compare their share of the ROI with
``share_threshold``: a larger share marks the normal region, a smaller one the abnormal regions.
Type 3: otherwise (few small regions) → mark the abnormal regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MarkingParams:
    large_region_ml: float = 100.0
    many_count: int = 5
    share_threshold: float = 0.5


@dataclass(frozen=True)
class Marking:
    type: int
    marked_region: str  # "normal" or "abnormal"
    reason: str


def choose_marking(region_volumes_ml: Sequence[float], roi_ml: float, params: MarkingParams) -> Marking:
    largest = max(region_volumes_ml, default=0.0)
    if largest >= params.large_region_ml:
        return Marking(1, "normal", f"largest abnormal region {largest:.1f} mL >= {params.large_region_ml} mL")
    if len(region_volumes_ml) >= params.many_count:
        share = sum(region_volumes_ml) / roi_ml if roi_ml > 0 else 0.0
        region = "normal" if share >= params.share_threshold else "abnormal"
        return Marking(2, region, f"{len(region_volumes_ml)} regions, share {share:.3f} vs {params.share_threshold}")
    return Marking(3, "abnormal", f"{len(region_volumes_ml)} small abnormal regions")
