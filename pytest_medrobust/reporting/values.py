"""Small helpers for reading values out of a results dictionary.

The results dictionary (the content of ``reports/medrobust.json``) may be hand-edited, come from
an older version, or describe a crashed cell, so the report renderers never trust its types: a
number is used only if it is a finite real number, a table only if it is a mapping, a name only
if it is a string. These helpers are shared by the HTML and Markdown reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from .. import cells

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
    """An occlusion level from the JSON as a lookup key (see :func:`pytest_medrobust.cells.level_key`),
    None if it is not a number."""
    number = as_number(level)
    return None if number is None else cells.level_key(number)


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
