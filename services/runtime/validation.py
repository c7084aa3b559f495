"""Small validators for request fields. Each raises :class:`ValidationError` naming the field."""

from __future__ import annotations

import math
from collections.abc import Sized

from services.runtime.errors import ValidationError

MAX_ID_LENGTH = 128


def require_id(field: str, value: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    """An id: non-empty, at most ``max_length`` characters, no control characters."""
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > max_length:
        raise ValidationError(field, f"must be at most {max_length} characters, got {len(value)}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationError(field, "must not contain control characters")
    return value


def require_text(field: str, value: str, *, max_length: int, allow_empty: bool = False) -> str:
    """Free text of at most ``max_length`` code points (non-empty unless ``allow_empty``)."""
    if not value and not allow_empty:
        raise ValidationError(field, "must not be empty")
    if len(value) > max_length:
        raise ValidationError(field, f"must be at most {max_length} characters, got {len(value)}")
    return value


def require_range(field: str, value: float, low: float, high: float) -> float:
    """A finite number in [low, high]."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(field, f"must be a finite number, got {value}")
    if not low <= value <= high:
        raise ValidationError(field, f"must be in {low:g}..{high:g}, got {value:g}")
    return value


def require_count(field: str, items: Sized, *, low: int = 0, high: int) -> None:
    """A repeated field with ``low``..``high`` entries."""
    n = len(items)
    if n < low or n > high:
        raise ValidationError(field, f"must have {low}..{high} entries, got {n}")
