"""Small helpers for reading values out of a results dictionary.

The results dictionary (the content of ``reports/medrobust.json``) may be hand-edited, come from
an older version, or describe a crashed cell, so the report renderers never trust its types: a
number is used only if it is a finite real number, a table only if it is a mapping, a name only
if it is a string. These helpers are shared by the HTML and Markdown reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["as_number", "as_mapping", "unique", "level_key", "level_text"]


def as_number(value: object) -> float | None:
    """A finite real number from the JSON as a float, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def as_mapping(value: object) -> Mapping:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def unique(items: Iterable[object]) -> list:
    """The strings among ``items``, first occurrence first, without repeats; the rest is dropped."""
    out: list = []
    for item in items:
        if isinstance(item, str) and item not in out:
            out.append(item)
    return out


def level_key(level: object) -> float | None:
    """An occlusion level as a lookup key: rounded to 9 decimals, None if it is not a number.

    Rounding makes levels that differ only by float noise (``0.1 + 0.2`` and ``0.3``) the same key.
    """
    number = as_number(level)
    return None if number is None else round(number, 9)


def level_text(level: float, *, negative_zero: bool = False) -> str:
    """An occlusion level (a share of the image, 0 to 1) as a percentage: ``"30%"``, ``"12.5%"``.

    Whole percentages have no decimals, others one. ``negative_zero`` decides how a negative
    level that rounds to zero (``-0.0``, ``-1e-12``) is written: ``"0%"`` by default, ``"-0%"``
    when true (the Markdown summary has always kept that sign).
    """
    percent = level * 100.0
    if abs(percent - round(percent)) < 1e-9:
        return f"{percent:.0f}%" if negative_zero else f"{int(round(percent))}%"
    return f"{percent:.1f}%"
