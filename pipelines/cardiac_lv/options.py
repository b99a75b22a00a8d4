"""Reading the pipeline's parameters and the training/evaluation options: one clear error per bad value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dicomnode.errors import ValidationError

__all__ = ["flag", "number"]


def number(options: Mapping[str, Any], key: str, default: float, what: str = "parameter") -> float:
    """``options[key]`` as a number (``default`` when absent); ValidationError naming it otherwise."""
    value = options.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} {key} must be a number, got {value!r}") from exc


def flag(options: Mapping[str, Any], key: str, default: bool, what: str = "parameter") -> bool:
    """``options[key]`` as true/false (1/0, yes/no, on/off accepted)."""
    value = options.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValidationError(f"{what} {key} must be true or false, got {value!r}")
