"""The patent's clean-up of a bone segmentation, shared by the classical and the learned path: connected
components, then drop those whose volume is below a first threshold, or that lie farther than a second
threshold from every other component (the patent's "and/or": here isolated components are dropped unless they
are large, so an arm beside the trunk stays while a calcified node or a table rail goes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.ct_fracture import morphology as morph


@dataclass(frozen=True)
class CleanupParams:
    min_volume_ml: float = 0.15  # a calcified spot is ~0.01-0.1 mL; the smallest rib piece worth keeping ~0.3 mL
    max_gap_mm: float = 15.0  # farther than this from every other component: isolated
    keep_isolated_ml: float = 15.0  # isolated but this large: a bone on its own (an arm, a femur), kept


@dataclass
class CleanupResult:
    labels: morph.LabelArray  # kept components relabelled 1..count, largest first
    count: int
    dropped_small: int
    dropped_isolated: int


def clean_components(
    mask: morph.BoolArray, spacing: Sequence[float], params: CleanupParams = CleanupParams()
) -> CleanupResult:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    labels, n = morph.label(mask)
    if n == 0:
        return CleanupResult(labels, 0, 0, 0)
    sizes = morph.component_sizes(labels, n, mask)
    volume_ml = sizes * voxel_ml
    small = volume_ml < params.min_volume_ml
    small[0] = False
    big_enough = ~small
    big_enough[0] = False
    # Two components closer than max_gap touch once both grow by half of it: label the grown mask, and a
    # component alone in its grown group is isolated (the distance is the in-plane Euclidean one, or along z).
    keep_voxels = big_enough[labels]
    half = morph.radius_voxels(params.max_gap_mm / 2.0, spacing)
    groups, _ = morph.label(morph.dilate(keep_voxels, half))
    group_of = np.zeros(n + 1, dtype=np.int64)
    group_of[labels[keep_voxels]] = groups[keep_voxels]
    members = np.bincount(group_of[big_enough], minlength=int(group_of.max()) + 1)
    isolated = big_enough & (members[group_of] == 1)
    drop_isolated = isolated & (volume_ml < params.keep_isolated_ml)
    kept = big_enough & ~drop_isolated
    order = np.argsort(-volume_ml * kept, kind="stable")
    new_label = np.zeros(n + 1, dtype=np.uint32)
    count = int(kept.sum())
    new_label[order[:count]] = np.arange(1, count + 1, dtype=np.uint32)
    del groups
    return CleanupResult(new_label[labels], count, int(small[1:].sum()), int(drop_isolated.sum()))
