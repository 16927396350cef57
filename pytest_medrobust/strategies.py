"""Hypothesis strategies and settings profiles for occlusion tests.

Public API::

    mask_specs(level, height, width, patch="black_box", **options) -> SearchStrategy[MaskSpec]
    placement_policies(patch="black_box", level=None, *, steps=8, jitters=..., counts=...)
        -> SearchStrategy[PlacementPolicy]
    centre_out(steps) -> list[float]            # 0.5 first, then outwards: what policies shrink to
    PlacementPolicy                             # re-exported from pytest_medrobust.occlusion
    register_profiles(*, ci_examples=10, explore_examples=100) -> None
    cell_settings(profile="medrobust-ci", max_examples=None) -> hypothesis.settings

Shrinking
---------
Hypothesis shrinks ``sampled_from`` toward its first element and integers toward 0. Positions are
therefore drawn from :func:`centre_out` -- ``0.5`` first, then ``0.375, 0.625, 0.25, ...`` with
``steps=8`` -- jitter from ``(0.0, ...)`` and counts from ``(None, 1, 2, ...)``. The simplest
policy, the one a failing search shrinks to when it still fails, is therefore **the occluder
centred on every image, no jitter, the patch's own piece count**:
``PlacementPolicy(0.5, 0.5, 0.0, None)``. The centre was chosen over a corner because it is the
easiest placement to explain ("a centred box") and the one that covers the most anatomy on a
chest radiograph; a failure that needs an off-centre box shrinks to the nearest grid position
that still fails, each coordinate separately.

Example::

    from hypothesis import given
    from pytest_medrobust.strategies import mask_specs, placement_policies

    @given(mask_specs(0.3, 224, 224, "random_erase"))
    def test_area(spec):
        assert spec.area == round(0.3 * 224 * 224)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .occlusion import MaskSpec, PatchType, PlacementPolicy, check_level, make_patch, patch_label, place_one

__all__ = [
    "CI_PROFILE",
    "EXPLORE_PROFILE",
    "PlacementPolicy",
    "cell_settings",
    "centre_out",
    "mask_specs",
    "placement_policies",
    "register_profiles",
]

CI_PROFILE = "medrobust-ci"
EXPLORE_PROFILE = "medrobust-explore"
DEFAULT_JITTERS = (0.0, 0.05, 0.1, 0.2)
DEFAULT_COUNTS = (None, 1, 2, 3, 4, 6, 8)


def centre_out(steps: int = 8) -> list[float]:
    """The positions ``k / steps`` (k = 0..steps), ordered by distance from 0.5 (nearer first,
    then the smaller): ``[0.5, 0.375, 0.625, 0.25, 0.75, 0.125, 0.875, 0.0, 1.0]`` for 8."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    values = {round(k / steps, 10) for k in range(steps + 1)}
    if steps % 2:
        values.add(0.5)
    return sorted(values, key=lambda v: (abs(v - 0.5), v))


def _value(draw, value: Any) -> Any:
    return draw(value) if isinstance(value, SearchStrategy) else value


def _pos(k: int, half_steps: int) -> float:
    """k = 0, 1, 2, ... -> 0.5, then alternately below and above it, out to 0 and 1."""
    if k == 0:
        return 0.5
    d = ((k + 1) // 2) / (2 * half_steps)
    return 0.5 - d if k % 2 else 0.5 + d


@st.composite
def mask_specs(draw, level: Any, height: Any, width: Any, patch: Any = "black_box", **options: Any) -> MaskSpec:
    """Mask specifications of one patch type at one level on an ``height x width`` image.

    ``level``, ``height``, ``width`` and ``patch`` may be values or strategies. Draws the
    position (shrinking toward the centre), the piece count of multi-piece patches (shrinking
    toward the patch's own), a box's aspect ratio where the patch has that option and it is not
    given (shrinking toward square), and the seed of the rest of the patch's randomness
    (shrinking toward 0). Every mask has exactly the level's area."""
    level = check_level(_value(draw, level))
    height, width = int(_value(draw, height)), int(_value(draw, width))
    if height < 1 or width < 1:
        raise ValueError(f"image size must be at least 1x1, got {height}x{width}")
    base = make_patch(_value(draw, patch))
    specs: dict[str, Any] = getattr(base, "option_specs", lambda: {})()
    if "aspect" in specs and "aspect" not in options:
        options = {**options, "aspect": draw(st.sampled_from((1.0, 0.5, 2.0, 0.25, 4.0)))}
    p = make_patch(base, **options) if options else base
    half = 100
    fy = _pos(draw(st.integers(0, 2 * half)), half)
    fx = _pos(draw(st.integers(0, 2 * half)), half)
    count = draw(st.one_of(st.none(), st.integers(1, 12))) if getattr(p, "multi_piece", False) else None
    seed = draw(st.integers(0, 2**32 - 1))
    return place_one(p, level, height, width, np.random.default_rng(seed), at=(fy, fx, count))


def placement_policies(
    patch: PatchType | str = "black_box",
    level: float | None = None,
    *,
    steps: int = 8,
    jitters: tuple[float, ...] = DEFAULT_JITTERS,
    counts: tuple[int | None, ...] | None = None,
) -> SearchStrategy[PlacementPolicy]:
    """Dataset-wide placement policies for a search cell of ``patch`` at ``level``.

    Positions come from :func:`centre_out` (``steps`` + 1 values per axis), jitter from
    ``jitters`` and, for multi-piece patches only, the piece count from ``counts`` (default
    ``(None, 1, 2, 3, 4, 6, 8)``; None = the patch's own). Each shrinks toward its first element,
    so a failure shrinks toward ``PlacementPolicy(0.5, 0.5, 0.0, None)``: centred, no jitter.
    The drawn policies carry ``patch`` (its specification label) and ``level``, for
    ``describe()`` and ``replay()``."""
    p = make_patch(patch)
    label = patch_label(p)
    if level is not None:
        level = check_level(level)
    positions = centre_out(steps)
    if not jitters:
        raise ValueError("jitters must hold at least one value (put 0.0 first for 'no jitter')")
    if getattr(p, "multi_piece", False):
        count_values = tuple(counts) if counts is not None else DEFAULT_COUNTS
    else:
        count_values = (None,)
    return st.builds(
        PlacementPolicy,
        fy=st.sampled_from(positions),
        fx=st.sampled_from(positions),
        jitter=st.sampled_from(tuple(jitters)),
        count=st.sampled_from(count_values),
        patch=st.just(label),
        level=st.just(level),
    )


_SUPPRESSED = (HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example)


def register_profiles(*, ci_examples: int = 10, explore_examples: int = 100) -> None:
    """Register the Hypothesis settings profiles of search cells (safe to call more than once).

    * ``medrobust-ci`` -- reproducible and bounded: ``derandomize=True`` (the same examples on
      every run and worker), ``database=None``, ``deadline=None`` (a model evaluation is slow and
      its time varies), ``max_examples=ci_examples``, no "explain" phase (it re-runs examples),
      slow-data health checks suppressed.
    * ``medrobust-explore`` -- a wider random search: ``max_examples=explore_examples``,
      ``deadline=None``, the example database on (a failure found once is replayed first next
      time), failure blobs printed.

    Load one with ``settings.load_profile(name)``, or use :func:`cell_settings` per cell."""
    for name, value in (("ci_examples", ci_examples), ("explore_examples", explore_examples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    settings.register_profile(
        CI_PROFILE,
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=ci_examples,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
        suppress_health_check=_SUPPRESSED,
        print_blob=False,
        report_multiple_bugs=False,
    )
    settings.register_profile(
        EXPLORE_PROFILE,
        derandomize=False,
        deadline=None,
        max_examples=explore_examples,
        suppress_health_check=_SUPPRESSED,
        print_blob=True,
        report_multiple_bugs=False,
    )


def cell_settings(profile: str = CI_PROFILE, max_examples: int | None = None) -> settings:
    """The settings of one search cell: ``profile`` (registered on first use), with
    ``max_examples`` overriding its example count when given."""
    try:
        base = settings.get_profile(profile)
    except Exception:
        if profile not in (CI_PROFILE, EXPLORE_PROFILE):
            raise ValueError(f"unknown Hypothesis profile {profile!r}") from None
        register_profiles()
        base = settings.get_profile(profile)
    if max_examples is None:
        return base
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples must be an integer >= 1, got {max_examples!r}")
    return settings(base, max_examples=max_examples)
