"""The pipeline's parameters (``[pipelines.params.lung_longitudinal]`` in the config, or ``--param``).

Every key, its default and its unit are listed in ``README.md``; an unknown band name or a value that is not a
number is a clear ValidationError naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dicomnode.errors import ValidationError
from pipelines.lung_longitudinal.abnormal import AbnormalParams
from pipelines.lung_longitudinal.longitudinal import ChangeParams
from pipelines.lung_longitudinal.marking import MarkingParams
from pipelines.lung_longitudinal.normal import HuBand, band_from_params
from pipelines.lung_longitudinal.registration import RegistrationParams
from pipelines.lung_longitudinal.roi import RoiParams


@dataclass(frozen=True)
class Settings:
    band: HuBand
    roi: RoiParams = field(default_factory=RoiParams)
    abnormal: AbnormalParams = field(default_factory=AbnormalParams)
    change: ChangeParams = field(default_factory=ChangeParams)
    registration: RegistrationParams = field(default_factory=RegistrationParams)
    marking: MarkingParams = field(default_factory=MarkingParams)
    max_fov_cut: float = 0.02  # share of the lung surface on the edge of the field of view that is tolerated
    min_slices: int = 10


# parameter key -> (settings part, field)
_KEYS: dict[str, tuple[str, str]] = {
    "closing_mm": ("roi", "closing_mm"),
    "vessel_radius_mm": ("abnormal", "vessel_radius_mm"),
    "min_lesion_ml": ("abnormal", "min_lesion_ml"),
    "max_lesion_hu": ("abnormal", "max_lesion_hu"),
    "hilar_mm": ("abnormal", "hilar_mm"),
    "gate_mm": ("change", "gate_mm"),
    "gate_size_cap_mm": ("change", "gate_size_cap_mm"),
    "grown_pct": ("change", "grown_pct"),
    "shrunk_pct": ("change", "shrunk_pct"),
    "change_min_ml": ("change", "change_min_ml"),
    "registration_min_dice": ("registration", "min_dice"),
    "registration_max_surface_mm": ("registration", "max_surface_mm"),
    "large_region_ml": ("marking", "large_region_ml"),
    "many_count": ("marking", "many_count"),
    "share_threshold": ("marking", "share_threshold"),
}


def _number(params: Mapping[str, Any], key: str) -> float:
    value = params[key]
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"lung_longitudinal parameter {key} must be a number, got {value!r}") from exc


def settings_from_params(params: Mapping[str, Any]) -> Settings:
    """Settings from the configured parameters (unknown keys are ignored: they may belong to the node)."""
    low = _number(params, "hu_low") if "hu_low" in params else None
    high = _number(params, "hu_high") if "hu_high" in params else None
    settings = Settings(band=band_from_params(params.get("hu_band"), low, high))
    parts: dict[str, Any] = {}
    for key, (part, name) in _KEYS.items():
        if key in params:
            current = parts.get(part, getattr(settings, part))
            value: float | int = _number(params, key)
            if isinstance(getattr(current, name), int):
                value = int(value)
            parts[part] = replace(current, **{name: value})
    if "max_fov_cut" in params:
        parts["max_fov_cut"] = _number(params, "max_fov_cut")
    return replace(settings, **parts)
