"""Synthetic CT phantoms with known answers, shared by the node's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dicomnode.testing.synthetic import StudyInfo, write_ct_series

SPACING = (2.0, 1.0, 1.0)


def sphere_ct(shape: tuple[int, int, int] = (12, 48, 48)) -> tuple[np.ndarray, list[float]]:
    """A water cylinder (0 HU) in air with two bone-dense spheres; returns (HU volume, true sphere volumes mL)."""
    z, y, x = np.indices(shape, dtype=np.float32)
    hu = np.full(shape, -1000, dtype=np.float32)
    hu[(y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (shape[1] / 2 - 2) ** 2] = 0
    volumes = []
    for cz, cy, cx, radius_mm in ((5, 16, 16, 6.0), (6, 32, 30, 8.0)):
        inside = ((z - cz) * SPACING[0]) ** 2 + ((y - cy) * SPACING[1]) ** 2 + ((x - cx) * SPACING[2]) ** 2
        mask = inside <= radius_mm**2
        hu[mask] = 700
        volumes.append(float(mask.sum() * np.prod(SPACING) / 1000.0))
    return hu, volumes


def write_sphere_study(
    folder: Path, info: StudyInfo | None = None, shape: tuple[int, int, int] = (12, 48, 48)
) -> tuple[list[Path], list[float], StudyInfo]:
    info = info or StudyInfo()
    hu, volumes = sphere_ct(shape)
    return write_ct_series(hu, folder, spacing=SPACING, info=info), volumes, info


def cine_phantom(positions: int = 3, times: int = 20, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A beating bright disc: (position, time, row, column) MR values and the disc mask.

    The radius follows one cardiac cycle (largest at time 0, smallest half way) and grows with the position
    index, so each (position, time) has a different, known area. Noise keeps it from being trivially clean.
    """
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:size, 0:size]
    values = np.empty((positions, times, size, size), dtype=np.float32)
    masks = np.zeros((positions, times, size, size), dtype=np.uint8)
    for p in range(positions):
        for t in range(times):
            radius = 7.0 + 4.0 * np.cos(2 * np.pi * t / times) + p
            inside = (yy - size / 2) ** 2 + (xx - size / 2 + 3) ** 2 <= radius**2
            masks[p, t] = inside
            values[p, t] = np.where(inside, 900.0, 150.0) + rng.normal(0, 20, (size, size))
    return values, masks
