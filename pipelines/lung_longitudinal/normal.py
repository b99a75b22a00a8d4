"""Normal lung, classical path: voxels of the ROI inside a density band of well-aerated lung."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dicomnode.errors import ValidationError
from pipelines.lung_longitudinal.morphology import BoolArray


@dataclass(frozen=True)
class HuBand:
    """A density band [low, high] HU and the convention it comes from."""

    low: float
    high: float
    name: str

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValidationError(f"HuBand needs low < high, got {self.low}..{self.high}")

    def describe(self) -> str:
        return f"{self.name} band {self.low:.0f} to {self.high:.0f} HU"


# COVID-19 quantification convention (well-aerated lung) and the ARDS one (normally aerated).
BANDS = {
    "well_aerated": HuBand(-950.0, -700.0, "well-aerated"),
    "ards_normal": HuBand(-900.0, -500.0, "ARDS normally aerated"),
}
DEFAULT_BAND = "well_aerated"


def band_from_params(name: str | None, low: float | None, high: float | None) -> HuBand:
    """The band named in the config, or a custom one when both limits are given."""
    if low is not None and high is not None:
        return HuBand(float(low), float(high), "custom")
    key = name or DEFAULT_BAND
    if key not in BANDS:
        raise ValidationError(f"hu_band must be one of {sorted(BANDS)} (or give hu_low and hu_high), got {key!r}")
    return BANDS[key]


def normal_by_band(hu: npt.NDArray[np.float32], roi: BoolArray, band: HuBand) -> BoolArray:
    return np.asarray(roi & (hu >= band.low) & (hu <= band.high))
