"""JSON has no NaN or infinity: undefined numbers (an AUC of a one-class split) are written as null."""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """``value``, or None where it is a float NaN or infinity."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def finite_values(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with :func:`finite_or_none` applied to each value."""
    return {k: finite_or_none(v) for k, v in row.items()}
