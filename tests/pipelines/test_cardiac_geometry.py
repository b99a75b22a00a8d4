"""The LVQuan geometry on drawn masks with known answers: sector angles (clockwise from image-up), the RWT
order, ray averaging, dimensions over their sector pairs, areas, the centre of mass, anisotropic pixels."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.cardiac_lv.geometry import (
    RWT_ORDER,
    boundary_radii,
    lvquan_indices,
    ray_angles_deg,
    sector_of,
)

SIZE = 241
CENTRE = (120.0, 120.0)


def _polar(centre=CENTRE, spacing=(1.0, 1.0)):
    r, c = np.mgrid[:SIZE, :SIZE].astype(float)
    down, right = (r - centre[0]) * spacing[0], (c - centre[1]) * spacing[1]
    # Clockwise from image-up: 0° towards row 0, 90° towards the last column.
    return np.hypot(down, right), np.mod(np.degrees(np.arctan2(right, -down)), 360.0)


@pytest.mark.parametrize(
    ("angle", "sector"),
    [(0.0, "A"), (330.0, "A"), (29.9, "A"), (30.0, "AL"), (89.9, "AL"), (90.0, "IL"), (150.0, "I"), (209.9, "I"),
     (210.0, "IS"), (270.0, "AS"), (329.9, "AS"), (-10.0, "A"), (400.0, "AL")],
)  # fmt: skip
def test_sector_boundaries_follow_lvquan(angle, sector):
    assert sector_of(angle) == sector


def test_every_sector_holds_sixty_rays():
    names, counts = np.unique(sector_of(ray_angles_deg()), return_counts=True)
    assert dict(zip(names.tolist(), counts.tolist())) == {s: 60 for s in RWT_ORDER}


def test_radius_of_a_drawn_disc_is_its_radius_on_every_ray():
    radius, _ = _polar()
    radii = boundary_radii(radius <= 37.3, CENTRE)
    # A pixelated edge is within half a pixel of the circle on any ray, and exact on average.
    assert radii.min() > 37.3 - 0.5 and radii.max() < 37.3 + 0.5
    assert abs(radii.mean() - 37.3) < 0.1


def test_ray_from_outside_the_mask_has_radius_zero():
    radius, _ = _polar()
    ring = (radius > 10) & (radius <= 20)
    assert np.all(boundary_radii(ring, CENTRE) == 0.0)


def _ring_with_sector_walls(walls: dict[str, float], cavity_radius: float = 30.0, spacing=(1.0, 1.0)):
    radius, angle = _polar(spacing=spacing)
    cavity = radius <= cavity_radius
    sector = sector_of(angle)
    outer = np.zeros_like(radius)
    for name, wall in walls.items():
        outer[sector == name] = cavity_radius + wall
    return cavity, (radius <= outer) & ~cavity


def test_rwt_order_is_is_i_il_al_a_as():
    walls = {"IS": 4.0, "I": 6.0, "IL": 8.0, "AL": 10.0, "A": 12.0, "AS": 14.0}
    cavity, myocardium = _ring_with_sector_walls(walls)
    rwt = lvquan_indices(cavity, myocardium, (1.0, 1.0)).rwt
    # A step of thickness at each border: the rays either side see the neighbours' walls, so allow 0.25 mm.
    np.testing.assert_allclose(rwt, [4.0, 6.0, 8.0, 10.0, 12.0, 14.0], atol=0.25)


def test_angles_run_clockwise_from_image_up():
    # Only the upper-right sector (30-90°, clockwise from up) is thick: that is the anterolateral wall.
    walls = dict.fromkeys(RWT_ORDER, 5.0) | {"AL": 15.0}
    cavity, myocardium = _ring_with_sector_walls(walls)
    rwt = dict(zip(RWT_ORDER, lvquan_indices(cavity, myocardium, (1.0, 1.0)).rwt))
    assert rwt["AL"] > 14.5
    assert all(abs(v - 5.0) < 0.3 for k, v in rwt.items() if k != "AL")
    # Mirrored left-right, the same thick wall lies at 270-330°: anteroseptal (the septum is on the left).
    rwt_mirrored = dict(zip(RWT_ORDER, lvquan_indices(cavity[:, ::-1], myocardium[:, ::-1], (1.0, 1.0)).rwt))
    assert rwt_mirrored["AS"] > 14.5 and rwt_mirrored["AL"] < 5.5


def test_rwt_is_the_mean_over_the_rays_of_a_sector():
    # Within the inferior sector (150-210°) the wall grows linearly from 4 to 10 mm: its mean is 7 mm.
    radius, angle = _polar()
    cavity = radius <= 30.0
    wall = np.where((angle >= 150) & (angle < 210), 4.0 + 6.0 * (angle - 150.0) / 60.0, 5.0)
    myocardium = (radius <= 30.0 + wall) & ~cavity
    rwt = dict(zip(RWT_ORDER, lvquan_indices(cavity, myocardium, (1.0, 1.0)).rwt))
    assert abs(rwt["I"] - 7.0) < 0.25


def test_dimensions_average_the_cavity_radius_over_their_sector_pairs():
    # An ellipse with its long axis vertical (semi-axes 40 up-down, 25 left-right), in mm on 0.5 mm pixels.
    spacing = (0.5, 0.5)
    radius, angle = _polar(spacing=spacing)
    a, b = 40.0, 25.0
    t = np.deg2rad(angle)
    inside = radius <= a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    ix = lvquan_indices(inside, np.zeros_like(inside), spacing)
    rays = np.deg2rad(ray_angles_deg())
    r = a * b / np.sqrt((b * np.cos(rays)) ** 2 + (a * np.sin(rays)) ** 2)
    sectors = sector_of(ray_angles_deg())

    def expected(s1, s2):
        return 2 * r[(sectors == s1) | (sectors == s2)].mean()

    np.testing.assert_allclose(
        ix.dimensions, [expected("AL", "IS"), expected("A", "I"), expected("IL", "AS")], atol=0.3
    )
    assert ix.dimensions[1] > ix.dimensions[0] == pytest.approx(ix.dimensions[2], abs=0.2)


def test_areas_are_pixel_counts_times_pixel_area():
    cavity, myocardium = _ring_with_sector_walls(dict.fromkeys(RWT_ORDER, 6.0))
    ix = lvquan_indices(cavity, myocardium, (1.2, 0.8))
    assert ix.cavity_area == pytest.approx(cavity.sum() * 1.2 * 0.8)
    assert ix.myocardium_area == pytest.approx(myocardium.sum() * 1.2 * 0.8)
    assert not ix.in_pixels


def test_centre_is_the_cavity_centre_of_mass():
    radius, _ = _polar()
    cavity = radius <= 20.0
    cavity[100:141, 140:170] = True  # a bulge to the right moves the centre of mass
    ix = lvquan_indices(cavity, np.zeros_like(cavity), (1.0, 1.0))
    rows, cols = np.nonzero(cavity)
    assert ix.centre_rc == pytest.approx((rows.mean(), cols.mean()), abs=1e-9)


def test_anisotropic_pixels_are_measured_in_mm():
    # Rows 2 mm apart, columns 1 mm: a circle of radius 30 mm is an ellipse in pixels.
    spacing = (2.0, 1.0)
    radius, _ = _polar(spacing=spacing)
    cavity = radius <= 30.0
    myocardium = (radius <= 38.0) & ~cavity
    ix = lvquan_indices(cavity, myocardium, spacing)
    np.testing.assert_allclose(ix.dimensions, [60.0, 60.0, 60.0], atol=0.8)
    np.testing.assert_allclose(ix.rwt, [8.0] * 6, atol=0.6)
    assert ix.cavity_area == pytest.approx(np.pi * 30.0**2, rel=0.02)


def test_unknown_spacing_measures_in_pixels():
    radius, _ = _polar()
    cavity = radius <= 25.0
    ix = lvquan_indices(cavity, (radius <= 31.0) & ~cavity, None)
    assert ix.in_pixels
    assert ix.cavity_area == cavity.sum()
    np.testing.assert_allclose(ix.rwt, [6.0] * 6, atol=0.5)


def test_empty_cavity_is_refused():
    empty = np.zeros((20, 20), dtype=bool)
    with pytest.raises(ValueError, match="empty"):
        lvquan_indices(empty, empty, (1.0, 1.0))
