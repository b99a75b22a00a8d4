"""The patent's phase: a polynomial fitted to the cavity areas, ED at its maximum, ES at its minimum, systole
from after ED up to and including ES, wrapping around; the degree guarded by the number of frames."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.cardiac_lv.phase import effective_degree, fit_phase, systole_labels


def _areas(n: int, ed: int, es_after: int) -> np.ndarray:
    """A cavity curve: largest at frame ``ed``, smallest ``es_after`` frames later (cosine ejection and
    filling)."""
    t = np.arange(n)
    phase = np.mod(t - ed, n)
    up = np.where(phase <= es_after, np.cos(np.pi * phase / es_after), np.cos(np.pi * (n - phase) / (n - es_after)))
    return 1500.0 + 600.0 * up


def test_ed_and_es_are_the_fitted_extremes_and_systole_lies_between():
    result = fit_phase(_areas(20, ed=2, es_after=7))
    assert (result.ed, result.es) == (2, 9)
    assert result.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]


def test_systole_wraps_round_the_end_of_the_cine():
    result = fit_phase(_areas(20, ed=16, es_after=8))
    assert (result.ed, result.es) == (16, 4)
    expected = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert result.labels.tolist() == expected


def test_labels_rule_directly():
    assert systole_labels(6, 4, 1).tolist() == [1, 1, 0, 0, 0, 1]
    assert systole_labels(5, 0, 2).tolist() == [0, 1, 1, 0, 0]


def test_one_noisy_frame_does_not_flip_the_phase():
    areas = _areas(20, ed=0, es_after=7)
    areas[13] = areas.min() - 150.0  # one frame mis-measured below end-systole
    result = fit_phase(areas)
    assert result.es in (6, 7, 8)  # the fit ignores the outlier; argmin of the raw curve would say 13
    assert int(np.argmin(areas)) == 13


@pytest.mark.parametrize(("requested", "frames", "used"), [(11, 20, 11), (11, 8, 5), (11, 30, 11), (1, 20, 2)])
def test_degree_is_guarded_by_the_number_of_frames(requested, frames, used):
    assert effective_degree(requested, frames) == used
    assert fit_phase(_areas(frames, 0, frames // 3), requested).degree == used


def test_too_few_frames_or_missing_areas_are_refused():
    with pytest.raises(ValueError, match="at least 3"):
        fit_phase([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        fit_phase([1.0, np.nan, 2.0, 3.0])
