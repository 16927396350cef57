"""Dataset-wide placement policies: how every image of a dataset is occluded in a search cell.

A seeded grid cell puts each image's occluder at a random position. A *search* cell instead asks
Hypothesis for a :class:`PlacementPolicy` -- a few numbers shared by the whole dataset -- so that
a failing case can be shrunk to a simple, explainable one and replayed exactly:

* ``(fy, fx)`` -- the occluder's relative position in [0, 1]^2: ``fy = 0`` puts its top edge on
  the image's top edge, ``fy = 1`` its bottom edge on the image's bottom edge, ``0.5`` centres it
  (likewise ``fx`` for left / right). The box always stays inside the image. Multi-piece patches
  put their first piece there and cluster the others around it; ``grid_cutout`` uses it as the
  position of each block inside its grid cell.
* ``jitter`` -- each image moves its ``(fy, fx)`` by up to ``+-jitter`` (uniform, from the image's
  own seeded generator), clipped to [0, 1]. 0 = the same position on every image.
* ``count`` -- pieces of a multi-piece patch (``grid_cutout``: cells per shorter side); None =
  the patch's own option.
* ``patch``, ``level`` -- optional labels: the patch specification and level the policy was
  drawn for (used by :meth:`describe` and :meth:`replay`, and checked by :meth:`plan`).
* ``mode`` -- how the position is read (per-image placements, docs/sensitivity.md):

  - ``fixed`` (default): ``(fy, fx)`` is the same relative position on every image;
  - ``grid``: the grid cell's own seeded random placement (``fy``, ``fx``, ``jitter``, ``count``
    unused), so a search can be compared with its grid cell on the very same masks;
  - ``guided``: each image's occluder centred on its most sensitive window;
  - ``region``: ``(fy, fx)`` (and the jitter) taken inside each image's sensitive region (the
    bounding box of the windows that cost at least half as much as its most sensitive one).

  ``guided`` and ``region`` need each image's :class:`~pytest_medrobust.sensitivity.Guide`:
  bind them with :meth:`with_guides` (they are data of the model, not of the policy, and are not
  part of its JSON; ``sensitivity.guides(runner, model)`` recomputes them).

The policy is deterministic in its fields and the run's seed: ``plan`` gives every image the
same mask on every run, worker and device, whatever the batch order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..cells import same_level
from ..errors import OcclusionError
from .engine import place_one, placement_seed
from .geometry import MaskSpec, check_level
from .patches import PatchType
from .registry import make_patch, patch_label


def _unit(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise OcclusionError(f"placement policy: {name} must be a number in [0, 1], got {value!r}")
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise OcclusionError(f"placement policy: {name} must be in [0, 1], got {value}")
    return value


MODES = ("fixed", "grid", "guided", "region")
_FIELDS = ("fy", "fx", "jitter", "count", "patch", "level", "mode")

_V = {0.0: "top", 0.5: "middle", 1.0: "bottom"}
_H = {0.0: "left", 0.5: "centre", 1.0: "right"}


@dataclass(frozen=True)
class PlacementPolicy:
    """Where every image of the dataset is occluded (see the module documentation)."""

    fy: float = 0.5
    fx: float = 0.5
    jitter: float = 0.0
    count: int | None = None
    patch: str | None = None
    level: float | None = None
    mode: str = "fixed"
    # image id -> Guide (sensitivity.Guide) for the guided and region modes; not compared, not JSON.
    guides: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OcclusionError(f"placement policy: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        object.__setattr__(self, "fy", _unit("fy", self.fy))
        object.__setattr__(self, "fx", _unit("fx", self.fx))
        object.__setattr__(self, "jitter", _unit("jitter", self.jitter))
        if self.count is not None:
            if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)) or self.count < 1:
                raise OcclusionError(f"placement policy: count must be None or an integer >= 1, got {self.count!r}")
            object.__setattr__(self, "count", int(self.count))
        if self.patch is not None and not isinstance(self.patch, str):
            raise OcclusionError(f"placement policy: patch must be a patch specification string, got {self.patch!r}")
        if self.level is not None:
            object.__setattr__(self, "level", check_level(self.level))

    # -- planning -------------------------------------------------------------------------------

    def _resolve(self, patch: PatchType | str | None, level: float | None) -> tuple[PatchType, float]:
        if patch is None:
            if self.patch is None:
                raise OcclusionError(f"{self!r} names no patch type; pass one")
            patch = self.patch
        patch = make_patch(patch)
        if self.patch is not None and self.patch not in (patch.name, patch_label(patch)):
            raise OcclusionError(f"{self!r} was drawn for patch {self.patch!r}, not {patch_label(patch)!r}")
        if level is None:
            if self.level is None:
                raise OcclusionError(f"{self!r} names no level; pass one")
            level = self.level
        level = check_level(level)
        if self.level is not None and not same_level(self.level, level):
            raise OcclusionError(f"{self!r} was drawn for level {self.level}, not {level}")
        if self.count is not None and not getattr(patch, "multi_piece", False):
            raise OcclusionError(f"placement policy: count applies to multi-piece patches only, not {patch.name!r}")
        return patch, level

    def with_guides(self, guides: Mapping[str, Any]) -> PlacementPolicy:
        """This policy with every image's sensitivity guide bound (guided and region modes)."""
        return replace(self, guides=guides)

    def position(self, rng: np.random.Generator) -> tuple[float, float]:
        """This image's (fy, fx): the policy's, moved by the jitter drawn from ``rng``."""
        if not self.jitter:
            return self.fy, self.fx
        dy, dx = rng.uniform(-self.jitter, self.jitter, 2)
        return min(max(self.fy + float(dy), 0.0), 1.0), min(max(self.fx + float(dx), 0.0), 1.0)

    def plan(
        self,
        patch: PatchType | str | None,
        level: float | None,
        ids: Sequence[str],
        height: int,
        width: int,
        seed: int,
    ) -> list[MaskSpec]:
        """Every image's mask under this policy; ``patch`` / ``level`` None use the policy's own."""
        patch, level = self._resolve(patch, level)
        specs = []
        for image_id in ids:
            rng = np.random.default_rng(placement_seed(seed, image_id, patch.name, level))
            if self.mode == "grid":  # exactly engine.plan_masks' seeded placement
                specs.append(place_one(patch, level, height, width, rng))
                continue
            fy, fx = self.position(rng)
            spec = place_one(patch, level, height, width, rng, at=(fy, fx, self.count))
            if self.mode != "fixed":
                spec = self._centre_on(spec, self._anchor(image_id, fy, fx), height, width)
            specs.append(spec)
        return specs

    def _anchor(self, image_id: str, fy: float, fx: float) -> tuple[float, float]:
        """The pixel the occluder is centred on in the guided and region modes."""
        guide = (self.guides or {}).get(image_id)
        if guide is None:
            raise OcclusionError(
                f"placement policy mode {self.mode!r} needs the sensitivity guide of image {image_id!r}; "
                "bind them with with_guides(pytest_medrobust.sensitivity.guides(runner, model))"
            )
        if self.mode == "guided":
            return guide.cy, guide.cx
        top, left, bottom, right = guide.region
        return top + fy * (bottom - top), left + fx * (right - left)

    @staticmethod
    def _centre_on(spec: MaskSpec, centre: tuple[float, float], height: int, width: int) -> MaskSpec:
        """``spec`` moved so that its bounding box is centred on ``centre``, kept inside the image."""
        box = spec.bbox()
        if box is None:
            return spec
        top = min(max(int(round(centre[0] - box.height / 2.0)), 0), height - box.height)
        left = min(max(int(round(centre[1] - box.width / 2.0)), 0), width - box.width)
        return spec.shifted(top - box.top, left - box.left)

    # -- reporting ------------------------------------------------------------------------------

    def where(self) -> str:
        fy, fx = self.fy, self.fx
        if fy == 0.5 and fx == 0.5:
            return "centred"
        if fy in (0.0, 1.0) and fx in (0.0, 1.0):
            return f"in the {_V[fy]}-{_H[fx]} corner"
        if fy in _V and fx in _H:
            return f"at the {_V[fy]} {_H[fx]}" if fy != 0.5 else f"at the middle {_H[fx]}"
        return f"at (y={fy:.2f}, x={fx:.2f}) [0 = top/left, 1 = bottom/right]"

    def describe(self, patch: str | None = None, level: float | None = None) -> str:
        """E.g. ``"black_box at 30% centred on every image"``."""
        patch = patch or self.patch or "the occluder"
        level = level if level is not None else self.level
        text = f"{patch} at {level:.0%}" if level is not None else str(patch)
        if self.mode == "grid":
            return text + " at the grid cell's seeded random position on each image"
        if self.mode == "guided":
            return text + " centred on each image's most sensitive window"
        if self.count is not None:
            text += f" in {self.count} piece{'s' if self.count != 1 else ''}"
        if self.mode == "region":
            text += f" {self.where()} within each image's sensitive region"
        else:
            text += f" {self.where()} on every image"
        if self.jitter:
            text += f", each moved by up to \u00b1{self.jitter:.2f}"
        return text

    def __str__(self) -> str:
        return self.describe()

    def to_json(self) -> dict:
        data = {name: getattr(self, name) for name in _FIELDS}
        if self.mode == "fixed":
            del data["mode"]  # as policies were written before modes existed
        return data

    @classmethod
    def from_json(cls, data: dict | str) -> PlacementPolicy:
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise OcclusionError(f"placement policy: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise OcclusionError(f"placement policy: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise OcclusionError(f"placement policy: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**data)

    def replay(
        self,
        seed: int = 0,
        patch: str | None = None,
        level: float | None = None,
        stats: Mapping[str, float] | None = None,
        guides: Mapping[str, Any] | None = None,
    ) -> str:
        """A Python snippet that rebuilds this policy and occludes ``images`` (ids ``ids``) with it.

        ``guides`` (guided and region modes): every image's sensitivity guide, written into the
        snippet (one entry per image of the dataset) so that it needs no model to run.

        ``stats`` are the dataset statistics the cell filled with (``gray_box``, ``noise_box``):
        without them the snippet would fill with the 0.5 default, not what the cell measured."""
        patch = patch or self.patch
        level = level if level is not None else self.level
        lines = [
            "# images: B x 3 x H x W floats in [0, 1] at the model's input size; ids: their image ids",
            "from pytest_medrobust.occlusion import PlacementPolicy, occlude_with_policy",
            f"policy = {self!r}",
        ]
        if self.mode in ("guided", "region"):
            if guides is None:
                raise OcclusionError(f"the replay of a {self.mode!r} policy needs every image's guide")
            table = {str(k): (g.cy, g.cx, tuple(g.region)) for k, g in sorted(guides.items())}
            lines += [
                "from pytest_medrobust.sensitivity import Guide",
                f"guides = {table!r}  # image id -> (centre y, centre x, sensitive region t, l, b, r), pixels",
                "policy = policy.with_guides({k: Guide(*v) for k, v in guides.items()})",
            ]
        call = f"occlude_with_policy(images, ids, policy, {patch!r}, {level!r}, seed={int(seed)}"
        if stats is not None:
            # repr() of a float reads back as the same float: the fill is bit for bit the cell's.
            lines.append(f"stats = {({str(k): float(v) for k, v in stats.items()})!r}")
            call += ", stats=stats"
        lines.append(f"occluded, masks = {call})")
        return "\n".join(lines) + "\n"
