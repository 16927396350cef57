"""The registry of patch types: built-ins, run-time registrations and entry points."""

from __future__ import annotations

import ast
import re
from importlib.metadata import entry_points
from typing import Any

from ..errors import OcclusionError
from .burnin import annotation
from .patches import (
    PatchType,
    black_box,
    blur_box,
    gray_box,
    grid_cutout,
    noise_box,
    random_erase,
    shuffle_box,
    white_box,
)
from .regions import region

ENTRY_POINT_GROUP = "pytest_medrobust.patches"

_BUILTIN: dict[str, PatchType] = {
    p.name: p for p in (black_box, white_box, gray_box, noise_box, blur_box, shuffle_box, grid_cutout, random_erase, annotation)
}
# Built-in patch types placed from the dataset (its regions), not at random: no place() of their own.
_FROM_DATASET: dict[str, PatchType] = {region.name: region}
_registered: dict[str, PatchType] = {}
_entry_points_loaded = False


def register_patch(patch: PatchType) -> PatchType:
    """Add (or replace) a patch type at run time; returns it, so it also works as a decorator of
    an instance-building call."""
    if isinstance(patch, type) or not isinstance(patch, PatchType):
        raise OcclusionError(f"{patch!r} is not a patch type (needs name, place() and fill())")
    _registered[patch.name] = patch
    return patch


def _as_patch(obj: Any) -> Any:
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, PatchType)):
        obj = obj()
    return obj


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            patch = _as_patch(ep.load())
        except Exception as exc:  # a broken third-party plugin must say which one
            raise OcclusionError(f"patch entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        if not isinstance(patch, PatchType):
            raise OcclusionError(f"patch entry point {ep.name!r} ({ep.value}) did not give a patch type")
        _registered.setdefault(ep.name, patch)


def available_patches() -> list[str]:
    _load_entry_points()
    return sorted({**_BUILTIN, **_FROM_DATASET, **_registered})


_SPEC = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(?:\((.*)\))?\s*$", re.S)


def parse_patch_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"grid_cutout(cells=4, fill='noise')"`` -> ``("grid_cutout", {"cells": 4, "fill": "noise"})``.

    Option values are Python literals (numbers, strings, booleans, tuples, lists); a bare word is
    a string (``region(name=heart)`` is ``region(name='heart')``)."""
    m = _SPEC.match(text)
    if m is None:
        raise OcclusionError(f"not a patch specification: {text!r} (expected name or name(option=value, ...))")
    name, args = m.group(1), m.group(2)
    if not args or not args.strip():
        return name, {}
    try:
        call = ast.parse(f"_({args})", mode="eval").body
        assert isinstance(call, ast.Call) and not call.args
        options: dict[str, Any] = {}
        for kw in call.keywords:
            assert kw.arg is not None  # a **mapping is not an option
            # A bare word is its own text (region(name=heart)): no quotes inside a TOML string.
            options[kw.arg] = kw.value.id if isinstance(kw.value, ast.Name) else ast.literal_eval(kw.value)
    except (SyntaxError, ValueError, AssertionError):
        raise OcclusionError(
            f"patch specification {text!r}: options must be option=literal pairs, e.g. grid_cutout(cells=4)"
        ) from None
    return name, options


def split_patch_specs(text: str) -> list[str]:
    """Split a comma-separated list of patch specifications at the commas outside parentheses:
    ``"black_box, grid_cutout(cells=4, fill='noise')"`` -> ``["black_box", "grid_cutout(cells=4, fill='noise')"]``."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    if depth or quote:
        raise OcclusionError(f"unbalanced parentheses or quotes in patch list {text!r}")
    return [item.strip() for item in items if item.strip()]


def _lookup(name: str) -> PatchType:
    _load_entry_points()
    patch = _registered.get(name) or _BUILTIN.get(name) or _FROM_DATASET.get(name)
    if patch is None:
        raise OcclusionError(f"unknown patch type {name!r}; registered: {', '.join(available_patches())}")
    return patch


def make_patch(patch: PatchType | str, **options: Any) -> PatchType:
    """A patch type, configured with ``options``.

    ``patch`` is a registered name, a specification string such as ``"grid_cutout(cells=4)"``
    (keyword options override the string's), or a patch object. Unknown or invalid options
    raise :class:`OcclusionError` naming the patch and the option."""
    if isinstance(patch, str):
        name, parsed = parse_patch_spec(patch)
        options = {**parsed, **options}
        base = _lookup(name)
    elif isinstance(patch, PatchType) and not isinstance(patch, type):
        base = patch
    else:
        raise OcclusionError(f"{patch!r} is not a patch type or a patch name")
    if not options:
        return base
    configure = getattr(base, "with_options", None)
    if configure is None:
        raise OcclusionError(f"patch {base.name!r} takes no options (got {', '.join(sorted(options))})")
    return configure(**options)


def get_patch(name: PatchType | str, **options: Any) -> PatchType:
    """Same as :func:`make_patch` (the v1 name)."""
    return make_patch(name, **options)


def patch_label(patch: PatchType) -> str:
    """``name(options...)`` for a configured built-in, else its name."""
    return getattr(patch, "label", patch.name)
