"""Procedural phantom chest radiographs (PA view) with matching radiology-style reports.

A phantom study is a synthetic frontal chest X-ray (dark air-filled lungs, bright mediastinum,
spine, heart, ribs, clavicles, diaphragm domes, shoulders and arms, a burnt-in side marker, film
blur and grain) plus a ``"FINDINGS: ... IMPRESSION: ..."`` report that describes exactly what was
drawn. Findings are placed anatomically, with laterality, lung zone and severity:

* ``cardiomegaly`` (mild / moderate / severe; enlarged heart shadow),
* ``effusion`` (left / right, small / moderate / large; a bilateral effusion is two findings),
* ``pneumothorax`` (left / right, small / large; lucent rim without lung markings, pleural line),
* ``consolidation`` (left / right, upper / middle / lower zone; patchy airspace opacity),
* ``nodule`` (left / right, upper / middle / lower zone; small round dense opacity),
* ``pacemaker`` (generator in the upper chest, usually left, lead into the heart),
* ``central_line`` (thin tube from the neck or subclavian region into the SVC).

Conventions: "left" and "right" are the *patient's* sides, so a left-sided finding appears on the
image's right half (the film is viewed as if facing the patient).

Everything is a pure function of ``(seed, index, size)``: each study draws its own random streams
from ``numpy.random.SeedSequence([salt, seed, index])`` and never looks at other indices, so any
subset of a split can be generated alone, in any order, or in parallel, bit-for-bit identically on
the same platform. The findings, the geometry and the report do not depend on ``size`` either;
only the rendering resolution and the film grain do.

Only numpy and Pillow are used. Images are rendered at two or more times the output size and
area-averaged down, for antialiasing.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageDraw

from ..files import atomic_write

__all__ = [
    "FINDING_KINDS",
    "NORMAL_REPORTS",
    "Finding",
    "PhantomStudy",
    "describe_study",
    "findings_summary",
    "generate_study",
    "regions_csv",
    "study_id",
    "study_regions",
    "write_split",
]

FINDING_KINDS = (
    "cardiomegaly",
    "effusion",
    "pneumothorax",
    "consolidation",
    "nodule",
    "pacemaker",
    "central_line",
)
SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")
SEVERITIES = {
    "cardiomegaly": ("mild", "moderate", "severe"),
    "effusion": ("small", "moderate", "large"),
    "pneumothorax": ("small", "large"),
}
# Which attributes each kind carries (the others are None).
_HAS_SIDE = {"effusion", "pneumothorax", "consolidation", "nodule", "pacemaker", "central_line"}
_HAS_ZONE = {"consolidation", "nodule"}

_T = TypeVar("_T")

_SALT = 0x70_68_61_6E  # "phan": keeps these streams apart from other users of the same seed
_MIN_SIZE = 16


@dataclass(frozen=True)
class Finding:
    kind: str
    side: str | None = None
    zone: str | None = None
    severity: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}; expected one of {FINDING_KINDS}")
        if self.kind in _HAS_SIDE:
            if self.side not in SIDES:
                raise ValueError(f"{self.kind} needs side 'left' or 'right', got {self.side!r}")
        elif self.side is not None:
            raise ValueError(f"{self.kind} takes no side, got {self.side!r}")
        if self.kind in _HAS_ZONE:
            if self.zone not in ZONES:
                raise ValueError(f"{self.kind} needs a zone in {ZONES}, got {self.zone!r}")
        elif self.zone is not None:
            raise ValueError(f"{self.kind} takes no zone, got {self.zone!r}")
        allowed = SEVERITIES.get(self.kind)
        if allowed is not None:
            if self.severity not in allowed:
                raise ValueError(f"{self.kind} needs a severity in {allowed}, got {self.severity!r}")
        elif self.severity is not None:
            raise ValueError(f"{self.kind} takes no severity, got {self.severity!r}")


@dataclass(frozen=True, eq=False)
class PhantomStudy:
    """One phantom study. Equality compares ids, findings, reports and image pixels."""

    id: str
    image: np.ndarray
    findings: tuple[Finding, ...]
    report: str

    @property
    def is_normal(self) -> bool:
        return not self.findings

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PhantomStudy):
            return NotImplemented
        return (
            self.id == other.id
            and self.findings == other.findings
            and self.report == other.report
            and self.image.shape == other.image.shape
            and bool(np.array_equal(self.image, other.image))
        )

    def __hash__(self) -> int:
        return hash((self.id, self.findings, self.report))


def _attr(value: str | None) -> str:
    """A finding's side, zone or severity where its kind always has one (``Finding`` checks this)."""
    if value is None:
        raise AssertionError("finding attribute missing although its kind requires it")
    return value


def findings_summary(findings: Iterable[Finding]) -> str:
    """A compact one-line label, e.g. ``"effusion(left,small); nodule(right,upper)"`` or ``"normal"``."""
    parts = []
    for f in findings:
        attrs = [a for a in (f.side, f.zone, f.severity) if a]
        parts.append(f"{f.kind}({','.join(attrs)})" if attrs else f.kind)
    return "; ".join(parts) if parts else "normal"


# --------------------------------------------------------------------------------------------
# Random streams
# --------------------------------------------------------------------------------------------


def _streams(seed: int, index: int) -> list[np.random.Generator]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    seed, index = int(seed), int(index)
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    folded = 2 * seed if seed >= 0 else -2 * seed - 1  # SeedSequence wants non-negative entropy
    children = np.random.SeedSequence([_SALT, folded, index]).spawn(4)
    # 0: findings, 1: anatomy and finding geometry, 2: report wording, 3: film grain (size-dependent)
    return [np.random.default_rng(c) for c in children]


# --------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------

_P_NORMAL = 0.35
_N_FINDINGS_P = (0.5, 0.32, 0.18)  # 1, 2 or 3 sampled kinds (a bilateral effusion adds one)
_KIND_WEIGHTS = np.array([0.16, 0.18, 0.10, 0.20, 0.14, 0.10, 0.12])
_KIND_WEIGHTS = _KIND_WEIGHTS / _KIND_WEIGHTS.sum()


def _pick(rng: np.random.Generator, options: Sequence[_T], p: Sequence[float] | None = None) -> _T:
    if p is None:
        return options[int(rng.integers(len(options)))]
    weights = np.asarray(p, dtype=float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def _sample_findings(rng: np.random.Generator) -> tuple[Finding, ...]:
    if rng.random() < _P_NORMAL:
        return ()
    k = 1 + int(rng.choice(3, p=_N_FINDINGS_P))
    kinds = [FINDING_KINDS[i] for i in rng.choice(len(FINDING_KINDS), size=k, replace=False, p=_KIND_WEIGHTS)]
    out: list[Finding] = []
    effusion_sides: set[str] = set()
    if "effusion" in kinds:
        laterality = _pick(rng, ("right", "left", "bilateral"), (0.36, 0.36, 0.28))
        for side in SIDES:
            if laterality in (side, "bilateral"):
                sev = _pick(rng, SEVERITIES["effusion"], (0.5, 0.33, 0.17))
                out.append(Finding("effusion", side=side, severity=sev))
                effusion_sides.add(side)
    effusion_sev = {f.side: f.severity for f in out}
    ptx_sev: dict[str, str] = {}

    def hidden(side: str, zone: str) -> bool:
        # a lung lesion must stay visible: not under the fluid, not in a large pneumothorax's space
        sev = effusion_sev.get(side)
        return ((sev == "moderate" and zone == "lower") or (sev == "large" and zone in ("middle", "lower"))
                or (ptx_sev.get(side) == "large" and zone == "upper"))

    for kind in sorted(kinds, key=FINDING_KINDS.index):
        if kind == "cardiomegaly":
            out.append(Finding(kind, severity=_pick(rng, SEVERITIES[kind], (0.45, 0.35, 0.2))))
        elif kind == "pneumothorax":
            free = [s for s in SIDES if s not in effusion_sides]
            if not free:  # no hydropneumothorax in the phantom
                continue
            side = _pick(rng, free)
            ptx_sev[side] = _pick(rng, SEVERITIES[kind], (0.6, 0.4))
            out.append(Finding(kind, side=side, severity=ptx_sev[side]))
        elif kind in ("consolidation", "nodule"):
            side = _pick(rng, SIDES)
            zone = _pick(rng, ZONES, (0.3, 0.3, 0.4) if kind == "consolidation" else (0.4, 0.35, 0.25))
            if hidden(side, zone):
                other = SIDES[1 - SIDES.index(side)]
                if not hidden(other, zone):
                    side = other
                else:
                    zone = next(z for z in ZONES if not hidden(side, z))
            out.append(Finding(kind, side=side, zone=zone))
        elif kind == "pacemaker":
            out.append(Finding(kind, side=_pick(rng, SIDES, (0.15, 0.85))))
        elif kind == "central_line":
            out.append(Finding(kind, side=_pick(rng, SIDES, (0.7, 0.3))))
    while len(out) > 3:  # a bilateral effusion counts twice; keep 1-3 findings per study
        out.pop(max(i for i, f in enumerate(out) if f.kind != "effusion"))
    # Render (and store) in a canonical order: by kind, right before left.
    out.sort(key=lambda f: (FINDING_KINDS.index(f.kind), SIDES.index(f.side) if f.side else -1))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Anatomy (all in "anatomical" units: x, y in [0, 1] of the nominal film, y down; sx = x - 0.5,
# so the patient's right is sx < 0. Sides are indexed 0 = right, 1 = left; sign = (-1, +1).)
# --------------------------------------------------------------------------------------------

_SIGN = (-1.0, 1.0)


class _Anatomy:
    """Plain bag of sampled parameters (size-independent), filled in by ``_sample_anatomy``.

    Per-side lists are indexed 0 = right, 1 = left; lengths and positions are anatomical units.
    """

    # positioning
    tx: float
    ty: float
    rot: float
    scale: float
    # habitus, soft tissue, shoulders and arms
    habitus: float
    torso_w: float
    shoulder_w: float
    soft: float
    neck_w: float
    shoulder_y: float
    shoulder_slope: float
    arm_c: float
    arm_vis: float
    arm_w: float
    breast: float
    breast_y: float
    # lungs
    apex: list[float]
    base: list[float]
    dome: list[float]
    s0: list[float]
    med: list[float]
    lat: list[float]
    lat_span: float
    air: float
    tex: np.ndarray
    # heart and mediastinum
    heart_ext: list[float]
    heart_peak: list[float]
    heart_tuck: list[float]
    heart_bot: float
    heart_top: float
    heart_dens: float
    knob: tuple[float, float, float]
    hila: list[tuple[float, float]]
    # bones
    rib_phase: float
    rib_sp: float
    rib_curve: float
    spine_w: float
    vert_phase: float
    clav: list[list[tuple[float, float]]]
    clav_y: float
    clav_w: float
    humerus: list[tuple[float, float, float]]
    # abdomen and vessels
    body_tex: np.ndarray
    bubble: tuple[float, float, float] | None
    bowel: list[tuple[float, float, float]]
    vessels: list[list[np.ndarray]]
    # exposure and film
    kexp: float
    gamma: float
    contrast: float
    bright: float
    blur: float
    grain: float
    heel: float
    marker: str
    marker_xy: tuple[float, float]
    # findings: per-finding geometry (aligned with the findings tuple), and what lesions must avoid
    fx: list[dict[str, Any]]
    ptx: dict[int, dict[str, float]]
    effusions: dict[int, dict[str, float]]
    generators: list[tuple[float, float, float, float]]


def _gfun(t, span):
    """Rounded rise from 0 (t <= 0) to 1 (t >= span): a quarter-ellipse profile."""
    v = np.clip(t * (1.0 / span), 0.0, 1.0)
    return np.sqrt(1.0 - (1.0 - v) ** 2)


def _medi_boundary(a: _Anatomy, k: int, y):
    """Half-width (from the midline, towards side k) of the mediastinum + heart shadow at height y."""
    t = (y - a.heart_top) * (1.0 / (a.heart_bot - a.heart_top))
    hp = np.sin(0.5 * math.pi * np.clip(t * (1.0 / a.heart_peak[k]), 0.0, 1.0)) ** 0.7
    hp = hp * (1.0 - a.heart_tuck[k] * np.clip(t - a.heart_peak[k], 0.0, 1.0))
    b = a.med[k] + (a.heart_ext[k] - a.med[k]) * hp
    if k == 1:
        kx, ky, ksig = a.knob
        b = np.maximum(b, a.med[k] + kx * np.exp(-((y - ky) * (1.0 / ksig)) ** 2))
    return b


def _lung_extent(a: _Anatomy, k: int, t: float) -> tuple[float, float, float]:
    """(medial limit incl. heart, lateral wall, y) of lung k at relative height t (0 apex, 1 base)."""
    y = a.apex[k] + t * (a.base[k] - a.apex[k])
    lat = a.s0[k] + (a.lat[k] - a.s0[k]) * float(_gfun(t, a.lat_span)) * (0.95 + 0.05 * t)
    med = max(a.s0[k] - (a.s0[k] - a.med[k]) * float(_gfun(t, 0.22)), float(_medi_boundary(a, k, y)))
    return med, lat, y


def _shoulder_top(a: _Anatomy, s):
    uu = np.clip((s - a.neck_w) * (1.0 / (0.5 - a.neck_w)), 0.0, 1.0)
    return a.shoulder_y + a.shoulder_slope * uu ** 1.2


def _sample_anatomy(rng: np.random.Generator, findings: tuple[Finding, ...]) -> _Anatomy:
    a = _Anatomy()
    u = rng.uniform
    # Positioning.
    a.tx, a.ty = u(-0.03, 0.03), u(-0.035, 0.035)
    a.rot = math.radians(u(-4.0, 4.0))
    a.scale = u(0.93, 1.05)
    # Habitus: 0 thin .. 1 large.
    a.habitus = u(0.0, 1.0)
    a.torso_w = 0.43 + 0.06 * a.habitus + u(-0.015, 0.015)
    a.shoulder_w = a.torso_w + u(0.03, 0.06)  # the shoulders are wider than the lower chest
    a.soft = 1.12 + 0.32 * a.habitus + u(-0.08, 0.08)  # soft-tissue density scale
    a.neck_w = u(0.075, 0.095)
    a.shoulder_y = u(-0.05, 0.02)
    a.shoulder_slope = u(0.15, 0.22)
    a.arm_c = a.shoulder_w + u(0.02, 0.06)
    a.arm_vis = 0.7 if rng.random() < 0.6 else 0.0
    a.arm_w = u(0.05, 0.075)
    a.breast = u(0.1, 0.25) if rng.random() < 0.4 else 0.0
    a.breast_y = u(-0.02, 0.03)
    # Lungs.
    apex = u(0.1, 0.15)
    height = u(0.55, 0.65)
    lat = u(0.32, 0.37)
    a.apex = [apex + u(-0.01, 0.01), apex + u(-0.01, 0.01)]
    right_high = u(0.01, 0.035)  # the right hemidiaphragm sits higher
    a.base = [apex + height - right_high / 2, apex + height + right_high / 2]
    dome = u(0.06, 0.1)
    a.dome = [dome + 0.005, dome]
    a.s0 = [u(0.12, 0.15), u(0.12, 0.15)]
    a.med = [u(0.042, 0.055), u(0.045, 0.06)]
    a.lat = [lat + u(-0.008, 0.008), lat + u(-0.008, 0.008)]
    a.lat_span = u(0.5, 0.72)
    a.air = u(0.77, 0.85) - 0.04 * a.habitus  # lung air fraction
    a.tex = rng.random((14, 14)).astype(np.float32)  # parenchymal mottle
    # Heart and mediastinum (the cardiothoracic ratio drives the heart's width).
    cardio = next((f for f in findings if f.kind == "cardiomegaly"), None)
    ctr_range = {None: (0.39, 0.47), "mild": (0.54, 0.58), "moderate": (0.6, 0.64), "severe": (0.67, 0.72)}
    ctr = u(*ctr_range[cardio.severity if cardio else None])
    width = ctr * (a.lat[0] + a.lat[1])
    right_ext = u(0.075, 0.1) * (1.0 + 0.6 * max(ctr - 0.5, 0.0))
    left_ext = min(width - right_ext, a.lat[1] - u(0.05, 0.065))  # a big heart still stays inside the chest
    a.heart_ext = [width - left_ext, left_ext]
    a.heart_peak = [u(0.45, 0.6), u(0.72, 0.9)]
    a.heart_tuck = [u(0.1, 0.4), u(0.0, 0.2)]
    a.heart_bot = 0.5 * ((a.base[0] - a.dome[0]) + (a.base[1] - a.dome[1])) + 0.01
    a.heart_top = apex + height * u(0.4, 0.47) - 0.05 * max(ctr - 0.5, 0.0)
    a.heart_dens = u(0.7, 0.82)
    a.knob = (u(0.02, 0.035), apex + height * u(0.24, 0.3), u(0.025, 0.035))
    a.hila = [(_SIGN[k] * (a.med[k] + u(0.035, 0.055)), apex + height * (u(0.4, 0.48) + 0.03 * (1 - k)))
              for k in (0, 1)]
    # Bones.
    a.rib_phase = u(0.0, 1.0)
    a.rib_sp = u(0.04, 0.048)
    a.rib_curve = u(0.85, 1.2)
    a.spine_w = u(0.03, 0.038)
    a.vert_phase = u(0.0, 1.0)
    clav_y = min(a.apex) + u(0.03, 0.06)
    shapes = []
    for _ in (0, 1):
        lift = u(0.02, 0.05)
        shapes.append([(0.04, 0.045), (0.1, 0.04), (0.19, 0.015), (0.28, -lift * 0.6), (0.37, -lift)])
    # keep both clavicles under the skin of the shoulders
    clav_y = max([clav_y] + [float(_shoulder_top(a, x)) + 0.03 - dy for pts in shapes for x, dy in pts])
    a.clav = [[(_SIGN[k] * x, clav_y + dy) for x, dy in shapes[k]] for k in (0, 1)]
    a.clav_y = clav_y
    a.clav_w = u(0.022, 0.028)
    a.humerus = []
    for k in (0, 1):
        hs = a.shoulder_w + u(-0.06, -0.035)
        top = float(_shoulder_top(a, hs))
        a.humerus.append((_SIGN[k] * hs, top + u(0.05, 0.07), u(0.045, 0.058)))
    a.body_tex = rng.random((6, 6)).astype(np.float32)  # broad soft-tissue unevenness
    a.bubble = (u(0.12, 0.2), u(0.03, 0.05), u(0.02, 0.032)) if rng.random() < 0.75 else None
    a.bowel = [(u(-0.3, 0.3), max(a.base) + u(0.06, 0.3), u(0.015, 0.04)) for _ in range(int(rng.integers(2, 7)))]
    # Vessel trees (line segments radiating from the hila).
    a.vessels = [_vessel_tree(rng, k, *a.hila[k]) for k in (0, 1)]
    # Exposure and film.
    a.kexp = u(0.9, 1.1)
    a.gamma = u(0.85, 1.2)
    a.contrast = u(0.9, 1.1)
    a.bright = u(-0.05, 0.04)
    a.blur = u(0.5, 0.9)  # in render pixels at 256
    a.grain = u(0.006, 0.018) * (1.0 + 0.4 * a.habitus)
    a.heel = u(-0.06, 0.06)
    a.marker = "L" if rng.random() < 0.8 else "R"
    a.marker_xy = (u(0.0, 0.03), u(0.0, 0.03))
    # Finding geometry.
    # (devices, pleural findings first, so that lung lesions can be placed where they stay visible)
    a.ptx, a.effusions, a.generators = {}, {}, []
    order = sorted(range(len(findings)), key=lambda i: findings[i].kind in ("consolidation", "nodule"))
    geometry: dict[int, dict[str, Any]] = {}
    for i in order:
        geometry[i] = _finding_geometry(rng, a, findings[i])
    a.fx = [geometry[i] for i in range(len(findings))]
    return a


def _vessel_tree(rng: np.random.Generator, k: int, hx: float, hy: float, depth: int = 4) -> list[np.ndarray]:
    """Branching vessel segments from a hilum, one (n, 4) array [x0, y0, x1, y1] per generation."""
    n0 = 9
    ang = np.linspace(-1.45, 1.35, n0) + rng.uniform(-0.12, 0.12, n0)  # 0 lateral, <0 up, >0 down
    length = rng.uniform(0.04, 0.065, n0)
    x, y = np.full(n0, hx), np.full(n0, hy)
    levels = []
    for level in range(depth):
        x2 = x + _SIGN[k] * length * np.cos(ang)
        y2 = y + length * np.sin(ang)
        levels.append(np.stack([x, y, x2, y2], axis=1))
        if level == depth - 1:
            break
        n = len(ang)
        turn = np.concatenate([-rng.uniform(0.25, 0.6, n), rng.uniform(0.25, 0.6, n)])
        ang = np.concatenate([ang, ang]) + turn
        length = np.concatenate([length, length]) * rng.uniform(0.65, 0.85, 2 * n)
        x, y = np.concatenate([x2, x2]), np.concatenate([y2, y2])
    return levels


def _zone_t(zone: str) -> tuple[float, float]:
    return {"upper": (0.14, 0.33), "middle": (0.42, 0.6), "lower": (0.7, 0.82)}[zone]


def _finding_geometry(rng: np.random.Generator, a: _Anatomy, f: Finding) -> dict:
    u = rng.uniform
    k = SIDES.index(f.side) if f.side else 0
    sg = _SIGN[k]
    if f.kind == "effusion":
        # Fluid top above the lateral costophrenic angle: (medial end, extra rise at the lateral wall).
        drop, rise = {"small": (u(-0.02, 0.0), u(0.075, 0.095)), "moderate": (u(0.1, 0.14), u(0.07, 0.1)),
                      "large": (u(0.24, 0.3), u(0.09, 0.12))}[_attr(f.severity)]
        g = {"drop_med": drop, "rise_lat": rise, "grad": u(0.04, 0.07)}
        a.effusions[k] = g
        return g
    if f.kind == "pneumothorax":
        if f.severity == "small":
            g = {"apex": u(0.035, 0.05), "lat": u(0.02, 0.03), "ext": u(0.4, 0.55)}
        else:
            g = {"apex": u(0.09, 0.13), "lat": u(0.06, 0.085), "ext": u(1.1, 1.4)}
        a.ptx[k] = g
        return g
    if f.kind in ("consolidation", "nodule"):
        # Rejection-sample a spot inside the lung's zone that no other finding hides.
        r = u(0.017, 0.024) if f.kind == "nodule" else u(0.045, 0.065)
        for attempt in range(100):
            t = u(*_zone_t(_attr(f.zone)))
            med, lat, y = _lung_extent(a, k, t)
            # first in the lung's middle third, then anywhere across the zone
            lo, hi = (0.38, 0.75) if attempt < 40 else (0.1, 0.9)
            s = u(med + lo * (lat - med), max(med + hi * (lat - med), med + lo * (lat - med) + 1e-3))
            if f.kind == "consolidation" and lat - 0.6 * r > med + 0.3 * r:
                s = min(s, lat - 0.6 * r)
            if _lesion_visible(a, k, s, y, r, t):
                break
        if f.kind == "nodule":
            return {"x": sg * s, "y": y, "r": r, "dens": u(0.75, 1.0)}
        blobs = [(sg * (s + u(-0.7, 0.7) * r), y + u(-0.7, 0.7) * r, r * u(0.4, 0.65)) for _ in range(7)]
        return {"blobs": blobs, "tex": rng.random((36, 36)).astype(np.float32), "dens": u(0.75, 0.95),
                "center": (sg * s, y, r)}
    if f.kind == "pacemaker":
        gx = sg * u(0.19, 0.26)
        gy = a.clav_y + u(0.045, 0.075)
        gw, gh, gang = u(0.042, 0.055), u(0.032, 0.042), u(-0.3, 0.3)
        # Lead: medially under the clavicle, down the SVC (patient's right of midline), through the
        # right atrium, ending over the ventricle near the cardiac apex.
        hb, ht = a.heart_bot, a.heart_top
        tip = (a.heart_ext[1] * u(0.45, 0.65), hb - u(0.02, 0.045))
        pts = [(gx - sg * gw * 0.6, gy), (sg * 0.12, a.clav_y + 0.035 + u(0.0, 0.015)), (sg * 0.06, a.clav_y + 0.06),
               (-0.03, a.clav_y + 0.1), (-0.04, ht + 0.02), (-0.045, ht + 0.5 * (hb - ht)),
               (tip[0] * 0.35, hb - 0.03), tip]
        a.generators.append((sg * abs(gx), gy, gw, gh))
        return {"gen": (gx, gy, gw, gh, gang), "lead": _smooth_path(pts), "lead_w": u(0.005, 0.0065)}
    if f.kind == "central_line":
        tip = (-u(0.025, 0.04), a.heart_top + u(-0.03, 0.0))
        if rng.random() < 0.55:  # internal jugular route from the neck
            pts = [(sg * u(0.045, 0.06), -0.02), (sg * 0.05, a.clav_y - 0.02), (sg * 0.045, a.clav_y + 0.04)]
        else:  # subclavian route, entering laterally under the clavicle
            pts = [(sg * u(0.27, 0.33), a.clav_y + u(0.0, 0.02)), (sg * 0.18, a.clav_y + 0.04),
                   (sg * 0.08, a.clav_y + 0.06)]
        pts += [(-0.032, a.clav_y + 0.1), tip]
        return {"path": _smooth_path(pts), "w": u(0.0035, 0.005)}
    if f.kind == "cardiomegaly":
        return {}
    raise AssertionError(f.kind)


def _fluid_top(a: _Anatomy, k: int, g: dict, s):
    uu = np.clip((s - a.med[k]) * (1.0 / (a.lat[k] - a.med[k])), 0.0, 1.15)
    return a.base[k] - g["drop_med"] - g["rise_lat"] * uu ** 1.6


def _lesion_visible(a: _Anatomy, k: int, s: float, y: float, r: float, t: float) -> bool:
    """Whether a lesion of radius r at (side k, s, y) stays clear of fluid, pneumothorax and devices."""
    if k in a.effusions and y + 0.6 * r > float(_fluid_top(a, k, a.effusions[k], s)) - 0.01:
        return False
    if k in a.ptx:
        g = a.ptx[k]
        _, lat, _ = _lung_extent(a, k, t)
        if s + r + 0.012 > lat - g["lat"] * math.sqrt(max(0.0, 1.0 - t / g["ext"])):
            return False
        if y - r < a.apex[k] + g["apex"] + 0.02:
            return False
    for gx, gy, gw, gh in a.generators:
        if (_SIGN[k] * s - gx) ** 2 + (y - gy) ** 2 < (max(gw, gh) + r + 0.02) ** 2:
            return False
    return True


def _smooth_path(pts: Sequence[tuple[float, float]], steps: int = 8) -> list[tuple[float, float]]:
    """A Catmull-Rom spline through the points (as a dense polyline)."""
    p = [pts[0]] + list(pts) + [pts[-1]]
    out: list[tuple[float, float]] = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        for j in range(steps):
            t = j / steps
            t2, t3 = t * t, t * t * t
            x, y = (
                0.5 * (2 * p1[d] + (-p0[d] + p2[d]) * t + (2 * p0[d] - 5 * p1[d] + 4 * p2[d] - p3[d]) * t2
                       + (-p0[d] + 3 * p1[d] - 3 * p2[d] + p3[d]) * t3)
                for d in (0, 1))
            out.append((x, y))
    out.append((pts[-1][0], pts[-1][1]))
    return out


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _ss(e0, e1, x):
    """Smoothstep from 0 at e0 to 1 at e1 (e1 < e0 gives a falling step)."""
    t = (x - e0) * (1.0 / (e1 - e0))
    np.clip(t, 0.0, 1.0, out=t)
    return t * t * (3.0 - 2.0 * t)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return img
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float32) / np.float32(sigma)) ** 2)
    k = (k / k.sum()).astype(np.float32)
    h, w = img.shape
    p = np.pad(img, ((0, 0), (r, r)), mode="edge")
    out = k[0] * p[:, 0:w]
    for i in range(1, 2 * r + 1):
        out += k[i] * p[:, i:i + w]
    p = np.pad(out, ((r, r), (0, 0)), mode="edge")
    out = k[0] * p[0:h]
    for i in range(1, 2 * r + 1):
        out += k[i] * p[i:i + h]
    return out


def _upsample(field: np.ndarray, R: int) -> np.ndarray:
    return np.asarray(Image.fromarray(field).resize((R, R), Image.Resampling.BICUBIC), dtype=np.float32)


class _Frame:
    """Maps anatomical coordinates to render pixels (and holds the per-pixel anatomical grid)."""

    def __init__(self, a: _Anatomy, R: int):
        self.R = R
        self.c, self.s, self.sc = math.cos(a.rot), math.sin(a.rot), a.scale
        self.tx, self.ty = a.tx, a.ty
        g = (np.arange(R, dtype=np.float32) + 0.5) / R
        X, Y = g[None, :] - np.float32(0.5 + a.tx), g[:, None] - np.float32(0.5 + a.ty)
        inv = 1.0 / a.scale
        c, s = np.float32(self.c * inv), np.float32(self.s * inv)
        self.sx = c * X + s * Y  # anatomical x - 0.5 (negative: patient's right)
        self.y = 0.5 + (c * Y - s * X)
        self.px = inv / R  # one render pixel in anatomical units

    def to_px(self, sx: float, y: float) -> tuple[float, float]:
        dx = self.sc * (self.c * sx - self.s * (y - 0.5))
        dy = self.sc * (self.s * sx + self.c * (y - 0.5))
        return (0.5 + self.tx + dx) * self.R - 0.5, (0.5 + self.ty + dy) * self.R - 0.5

    def to_px_array(self, sx: np.ndarray, y: np.ndarray) -> np.ndarray:
        sx, y = np.asarray(sx, dtype=np.float64), np.asarray(y, dtype=np.float64)
        dx = self.sc * (self.c * sx - self.s * (y - 0.5))
        dy = self.sc * (self.s * sx + self.c * (y - 0.5))
        return np.stack([(0.5 + self.tx + dx) * self.R - 0.5, (0.5 + self.ty + dy) * self.R - 0.5], axis=1)

    def box(self, xs: Sequence[float], ys: Sequence[float]) -> tuple[slice, slice] | None:
        """Pixel window (rows, cols) covering the anatomical rectangle xs x ys (sx and y ranges)."""
        corners = self.to_px_array(np.array([xs[0], xs[1], xs[0], xs[1]]), np.array([ys[0], ys[0], ys[1], ys[1]]))
        c0 = max(0, int(math.floor(corners[:, 0].min())) - 2)
        c1 = min(self.R, int(math.ceil(corners[:, 0].max())) + 3)
        r0 = max(0, int(math.floor(corners[:, 1].min())) - 2)
        r1 = min(self.R, int(math.ceil(corners[:, 1].max())) + 3)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def width(self, w: float) -> int:
        return max(1, int(round(w * self.sc * self.R)))


def _lung_dist(s, y, a: _Anatomy, k: int, shrink: dict | None = None):
    """Approximate signed distance inside lung k (positive inside), on arrays s = |sx| and y.

    The medial limit here is the thin mediastinum; the heart shadow is laid over it separately.
    """
    apex = a.apex[k] + (shrink["apex"] if shrink else 0.0)
    base, lat, med, s0 = a.base[k], a.lat[k], a.med[k], a.s0[k]
    t = (y - apex) * (1.0 / (base - apex))
    lat_y = s0 + (lat - s0) * _gfun(t, a.lat_span) * (0.95 + 0.05 * np.clip(t, 0.0, 1.0))
    if shrink:
        lat_y = lat_y - shrink["lat"] * np.sqrt(np.clip(1.0 - t * (1.0 / shrink["ext"]), 0.0, 1.0))
    med_y = s0 - (s0 - med) * _gfun(t, 0.22)
    uu = np.clip((s - med) * (1.0 / (lat - med)), 0.0, 1.0)
    ydia = base - a.dome[k] * (1.0 - ((uu - 0.4) * (1.0 / 0.6)) ** 2)
    return np.minimum(np.minimum(s - med_y, lat_y - s), np.minimum(ydia - y, (y - apex) * 1.5))


def _render(a: _Anatomy, findings: tuple[Finding, ...], R: int) -> np.ndarray:
    fr = _Frame(a, R)
    SX, Y, px = fr.sx, fr.y, fr.px
    S = np.abs(SX)
    LEFT = SX > 0  # the patient's left half (image right)
    edge = 1.2 * px
    fx = list(a.fx)
    f32 = np.float32

    # ---- body soft tissue ---------------------------------------------------------------
    shoulder_top = _shoulder_top(a, S)
    upper = np.maximum(0.8 * _ss(a.neck_w + 0.012, a.neck_w - 0.012, S),
                       _ss(shoulder_top - 0.01, shoulder_top + 0.05, Y))
    tw = a.torso_w + (a.shoulder_w - a.torso_w) * _ss(0.42, 0.2, Y)
    torso = _ss(tw + 0.02, tw - 0.05, S)
    torso *= 0.3 + 0.7 * np.sqrt(np.maximum(1.0 - (S / tw) ** 2, 0.0))
    body = torso * upper
    for hx, hy, hr in a.humerus:  # deltoid soft tissue around the humeral heads
        win = fr.box((hx - 2.5 * hr, hx + 2.5 * hr), (hy - 2.5 * hr, hy + 2.5 * hr))
        if win is not None:
            dist = np.sqrt(((SX[win] - hx) * (1.0 / 1.8)) ** 2 + ((Y[win] - hy) * (1.0 / 1.6)) ** 2) * (1.0 / hr)
            body[win] = np.maximum(body[win], 0.6 * _ss(1.0, 0.4, dist))
    if a.arm_vis:
        arm = np.sqrt(np.maximum(1.0 - ((S - a.arm_c) * (1.0 / a.arm_w)) ** 2, 0.0))
        arm *= _ss(shoulder_top - 0.02, shoulder_top + 0.06, Y)
        body = np.maximum(body, a.arm_vis * arm)
    D = (a.soft * body) * (0.95 + 0.1 * _upsample(a.body_tex, R))

    # ---- lungs, mediastinum, heart (each lung in its own bounding box) ------------------------
    air = np.zeros((R, R), f32)
    lung_any = np.zeros((R, R), f32)
    lung_core = np.zeros((R, R), f32)
    vessel_gate = np.zeros((R, R), f32)
    extra = np.zeros((R, R), f32)  # density added by findings
    ptx_of = {SIDES.index(f.side): fx[i] for i, f in enumerate(findings) if f.kind == "pneumothorax"}
    for k in (0, 1):
        sg = _SIGN[k]
        win = fr.box(sorted((0.0, sg * (a.lat[k] + 0.06))), (a.apex[k] - 0.05, a.base[k] + 0.04))
        if win is None:
            continue
        sx, y, s = SX[win], Y[win], S[win]
        half = (LEFT[win] if k == 1 else ~LEFT[win]).astype(f32)
        d = _lung_dist(s, y, a, k)
        mask = np.clip(0.5 + d * (1.0 / edge), 0.0, 1.0) * half
        lung_air = mask * (0.6 + 0.4 * _ss(-0.002, 0.05, d))
        gate = mask * _ss(0.0, 0.05, d)
        if k in ptx_of:
            g = ptx_of[k]
            dc = _lung_dist(s, y, a, k, shrink=g)
            collapsed = np.clip(0.5 + dc * (1.0 / edge), 0.0, 1.0) * half
            ptx = np.clip(mask - collapsed, 0.0, 1.0)
            # a lucent rim without lung markings, a slightly denser collapsed lung, and a thin
            # bright visceral pleural line at the collapsed lung's edge
            lung_air = lung_air * (1.0 - ptx) * (1.0 - 0.12 * collapsed) + ptx * min(1.0 / a.air, 1.08)
            line = np.exp(-(dc * (1.0 / max(0.005, 1.4 * px))) ** 2) * _ss(0.0, 0.012, d) * half
            extra[win] += 0.22 * line
            gate *= collapsed
        medi = _ss(0.0, 1.0, 0.5 + (_medi_boundary(a, k, y) - s) * (1.0 / edge))
        lung_any[win] = np.maximum(lung_any[win], mask)
        lung_core[win] = np.maximum(lung_core[win], _ss(-0.03, 0.0, d) * half)
        air[win] += lung_air * (1.0 - a.heart_dens * medi)
        vessel_gate[win] += gate * (1.0 - 0.7 * medi)
    air *= 0.93 + 0.12 * _upsample(a.tex, R)  # parenchymal mottle

    # effusions: fill the lung from the base, a meniscus rising along the lateral wall
    for i, f in enumerate(findings):
        if f.kind != "effusion":
            continue
        k = SIDES.index(f.side)
        g = fx[i]
        sg = _SIGN[k]
        y_min = a.base[k] - g["drop_med"] - g["rise_lat"] * 1.26 - 0.02
        win = fr.box(sorted((0.0, sg * (a.lat[k] + 0.06))), (y_min, a.base[k] + 0.04))
        if win is None:
            continue
        s, y = S[win], Y[win]
        half = (LEFT[win] if k == 1 else ~LEFT[win]).astype(f32)
        top = _fluid_top(a, k, g, s)
        fluid = np.maximum(_ss(top - 0.008, top + g["grad"], y), 0.35 * _ss(top - 0.008, top + 0.01, y)) * half
        air[win] *= 1.0 - fluid
        vessel_gate[win] *= 1.0 - fluid
        extra[win] += 0.12 * fluid * lung_any[win]

    # consolidations (patchy airspace opacity) and nodules (small dense round opacities)
    for i, f in enumerate(findings):
        g = fx[i]
        if f.kind == "consolidation":
            blob_x = [b[0] for b in g["blobs"]]
            blob_y = [b[1] for b in g["blobs"]]
            m = 3.2 * max(b[2] for b in g["blobs"])
            win = fr.box((min(blob_x) - m, max(blob_x) + m), (min(blob_y) - m, max(blob_y) + m))
            if win is None:
                continue
            sx, y = SX[win], Y[win]
            op = np.zeros(sx.shape, f32)
            for cx, cy, br in g["blobs"]:
                op += np.exp(-((sx - cx) ** 2 + (y - cy) ** 2) * (1.0 / (br * br)))
            tex = _upsample(g["tex"], R)[win]
            op = np.clip(0.9 * op, 0.0, 1.0) * np.clip(0.25 + 0.95 * tex, 0.0, 1.0) * (g["dens"] * lung_any[win])
            air[win] *= 1.0 - op
            vessel_gate[win] *= 1.0 - 0.5 * op
            extra[win] += 0.04 * op
        elif f.kind == "nodule":
            r = g["r"]
            win = fr.box((g["x"] - r - 0.01, g["x"] + r + 0.01), (g["y"] - r - 0.01, g["y"] + r + 0.01))
            if win is None:
                continue
            dn = r - np.sqrt((SX[win] - g["x"]) ** 2 + (Y[win] - g["y"]) ** 2)
            nod = np.clip(0.5 + dn * (1.0 / (1.5 * px)), 0.0, 1.0) * (0.8 + 0.2 * _ss(0.0, r, dn)) * g["dens"]
            air[win] *= 1.0 - 0.85 * nod
            extra[win] += 0.3 * nod

    D *= 1.0 - a.air * air
    if a.breast:  # soft lower-lateral shadows over the lung bases
        by = max(a.base) - 0.1 + a.breast_y
        win = fr.box((-0.46, 0.46), (by - 0.18, by + 0.14))
        if win is not None:
            s, y = S[win], Y[win]
            dist = np.sqrt(((s - 0.24) * (1.0 / 0.2)) ** 2 + ((y - by) * (1.0 / 0.13)) ** 2)
            D[win] += (a.breast * a.soft) * _ss(1.0, 0.8, dist) * _ss(by - 0.18, by + 0.04, y) * (
                0.25 + 0.75 * lung_core[win])

    # ---- midline: trachea, spine ----------------------------------------------------------------
    win = fr.box((-a.spine_w - 0.03, a.spine_w + 0.03), (-0.3, 1.3))
    if win is not None:
        sx, y, s = SX[win], Y[win], S[win]
        carina = a.apex[0] + 0.36 * (a.base[0] - a.apex[0])
        trach = _ss(a.spine_w * 0.85, a.spine_w * 0.6, np.abs(sx + 0.01 * (y - 0.2))) * _ss(carina + 0.01, carina - 0.03, y)
        vf = y * (1.0 / 0.05) + a.vert_phase
        vf -= np.floor(vf)
        spine = _ss(a.spine_w + 0.014, a.spine_w - 0.01, s) * (0.6 + 0.4 * _ss(0.0, 0.15, vf) * _ss(1.0, 0.85, vf))
        ped = _ss(0.5, 0.25, np.sqrt(((s - a.spine_w * 0.65) * (1.0 / 0.011)) ** 2 + ((vf - 0.45) * (1.0 / 0.22)) ** 2))
        D[win] += 0.24 * spine + 0.1 * ped - (0.4 * a.soft) * trach

    # ---- gastric bubble and bowel gas --------------------------------------------------------------
    blobs: list[tuple[float, float, float, bool]] = []
    if a.bubble is not None:
        bx, bdy, br = a.bubble
        blobs.append((bx, a.base[1] - a.dome[1] + bdy, br, True))
    blobs += [(bx, by, br, False) for bx, by, br in a.bowel]
    for bx, by, br, is_bubble in blobs:
        rx = 1.5 * br if is_bubble else br
        win = fr.box((bx - rx - 0.005, bx + rx + 0.005), (by - br - 0.005, by + br + 0.005))
        if win is None:
            continue
        sx, y = SX[win], Y[win]
        if is_bubble:
            db = np.sqrt(((sx - bx) * (1.0 / rx)) ** 2 + ((y - by) * (1.0 / br)) ** 2)
            gas = _ss(1.0, 0.75, db) * _ss(by + 0.4 * br, by + 0.2 * br, y)
        else:
            gas = 0.6 * _ss(1.0, 0.4, np.sqrt((sx - bx) ** 2 + (y - by) ** 2) * (1.0 / br))
        D[win] -= (0.28 * a.soft) * gas * (1.0 - lung_any[win])

    # ---- ribs: posterior ribs as a warped periodic pattern (arching up off the spine, curving
    # down along the lateral wall), plus fainter anterior ribs sloping down medially ------------------
    apex_min = min(a.apex)
    win = fr.box((-max(a.lat) - 0.06, max(a.lat) + 0.06), (apex_min - 0.04, max(a.base) + 0.08))
    if win is not None:
        sx, y, s = SX[win], Y[win], S[win]
        lw = LEFT[win]
        lat_s = np.where(lw, f32(a.lat[1]), f32(a.lat[0]))
        sn = s / lat_s
        q = y - apex_min + 0.015 - a.rib_curve * (-0.04 * sn + 0.14 * sn * sn + 0.6 * np.maximum(sn - 0.7, 0.0) ** 2)
        kap = 1.6
        r = np.log1p(kap * np.maximum(q, 0.0)) * (1.0 / (kap * a.rib_sp)) + a.rib_phase
        fph = r - np.floor(r)
        bandw = 0.5
        rib = _ss(0.0, 0.08, fph) * _ss(bandw, bandw - 0.08, fph) * (0.65 + 0.35 * np.abs(fph * (2.0 / bandw) - 1.0) ** 2)
        ys = np.where(lw, f32(a.base[1]), f32(a.base[0]))
        cage = (_ss(-0.01, 0.02, q) * _ss(lat_s + 0.04, lat_s + 0.012, s) * _ss(0.02, 0.05, s)
                * _ss(ys + 0.06, ys - 0.02, y))
        q2 = y - apex_min - 0.07 + 0.45 * s - 0.3 * s * s
        f2 = q2 * (1.0 / 0.08) + a.rib_phase * 0.7
        f2 -= np.floor(f2)
        arib = _ss(0.0, 0.12, f2) * _ss(0.4, 0.28, f2) * _ss(0.0, 0.03, q2) * _ss(0.08, 0.18, s)
        D[win] += cage * (0.12 + 0.88 * lung_core[win] * _ss(0.3, 0.75, air[win])) * (0.21 * rib + 0.09 * arib)

    # ---- line drawings: clavicles, humeri, vessels, devices ---------------------------------------
    bone_img = Image.new("F", (R, R), 0.0)
    draw = ImageDraw.Draw(bone_img)
    for hx, hy, hr in a.humerus:
        draw.line([fr.to_px(hx, hy), fr.to_px(hx + math.copysign(0.03, hx), hy + 0.6)], fill=0.45,
                  width=fr.width(0.05))
        draw.ellipse(_ellipse_box(fr, hx, hy, hr), fill=0.5)
    for pts in a.clav:  # a bright cortex around a less dense medulla
        path = [fr.to_px(x, yy) for x, yy in _smooth_path(pts, 5)]
        draw.line(path, fill=1.0, width=fr.width(a.clav_w), joint="curve")
        draw.line(path, fill=0.6, width=max(1, fr.width(a.clav_w * 0.5)), joint="curve")
    D += 0.55 * _blur(np.asarray(bone_img, dtype=f32), 1.0 * R / 256.0)

    ves_img = Image.new("F", (R, R), 0.0)
    draw = ImageDraw.Draw(ves_img)
    for levels in a.vessels:
        for level, segs in enumerate(levels):
            width = fr.width(0.007 * 0.72 ** level)
            val = 1.0 - 0.16 * level
            p0 = fr.to_px_array(segs[:, 0], segs[:, 1])
            p1 = fr.to_px_array(segs[:, 2], segs[:, 3])
            for x0, y0, x1, y1 in np.concatenate([p0, p1], axis=1).tolist():
                draw.line((x0, y0, x1, y1), fill=val, width=width)
    ves = _blur(np.asarray(ves_img, dtype=f32), 0.7 * R / 256.0)
    for hx, hy in a.hila:
        win = fr.box((hx - 0.09, hx + 0.09), (hy - 0.09, hy + 0.09))
        if win is not None:
            ves[win] += 0.8 * np.exp(-((SX[win] - hx) ** 2 + (Y[win] - hy) ** 2) * (1.0 / 0.0008))
    D += 0.3 * np.minimum(ves, 1.3) * np.clip(vessel_gate, 0.0, 1.0) + extra * a.soft

    metal_img = None
    for i, f in enumerate(findings):
        if f.kind not in ("pacemaker", "central_line"):
            continue
        if metal_img is None:
            metal_img = Image.new("F", (R, R), 0.0)
            mdraw = ImageDraw.Draw(metal_img)
        g = fx[i]
        if f.kind == "pacemaker":
            gx, gy, gw, gh, gang = g["gen"]
            th = np.linspace(0.0, 2.0 * math.pi, 32, endpoint=False)
            ex = gw * np.sign(np.cos(th)) * np.abs(np.cos(th)) ** 0.4
            ey = gh * np.sign(np.sin(th)) * np.abs(np.sin(th)) ** 0.4
            poly = fr.to_px_array(gx + ex * math.cos(gang) - ey * math.sin(gang),
                                  gy + ex * math.sin(gang) + ey * math.cos(gang))
            mdraw.polygon([tuple(p) for p in poly.tolist()], fill=3.0)
            mdraw.line([fr.to_px(*p) for p in g["lead"]], fill=2.5, width=max(2, fr.width(g["lead_w"])),
                       joint="curve")
        else:
            mdraw.line([fr.to_px(*p) for p in g["path"]], fill=2.5, width=max(2, fr.width(g["w"])), joint="curve")
    if metal_img is not None:
        D += _blur(np.asarray(metal_img, dtype=f32), 0.5 * R / 256.0)

    # ---- exposure, film response ----------------------------------------------------------------
    np.maximum(D, 0.0, out=D)
    img = 1.0 - np.exp(-a.kexp * D)
    img **= a.gamma
    img = (img - 0.5) * a.contrast + (0.5 + a.bright)
    img *= 1.0 + a.heel * (Y - 0.5)
    img = _blur(img, a.blur * R / 256.0)

    # burnt-in side marker (film coordinates, unaffected by positioning)
    mark = Image.new("F", (R, R), 0.0)
    r0, r1, c0, c1 = _draw_marker(ImageDraw.Draw(mark), a.marker, a.marker_xy, R)
    m = np.asarray(mark, dtype=f32)[r0:r1, c0:c1]
    img[r0:r1, c0:c1] = np.maximum(img[r0:r1, c0:c1], 0.97 * np.clip(_blur(m, 0.35 * R / 256.0), 0.0, 1.0))
    return img


def _ellipse_box(fr: _Frame, x: float, y: float, r: float) -> list[float]:
    cx, cy = fr.to_px(x, y)
    rp = r * fr.sc * fr.R
    return [cx - rp, cy - rp, cx + rp, cy + rp]


def _draw_marker(draw: ImageDraw.ImageDraw, letter: str, jitter: tuple[float, float], R: int
                 ) -> tuple[int, int, int, int]:
    """Draw the side-marker letter; returns the pixel window (r0, r1, c0, c1) that holds it."""
    w = max(2, int(round(0.014 * R)))
    hgt, wid = 0.065, 0.042
    x0 = (0.88 if letter == "L" else 0.06) + jitter[0]
    y0 = 0.05 + jitter[1]

    def P(x, y):
        return ((x0 + x * wid) * R, (y0 + y * hgt) * R)

    if letter == "L":
        draw.line([P(0, 0), P(0, 1), P(1, 1)], fill=1.0, width=w, joint="curve")
    else:
        pts = [P(0, 1), P(0, 0), P(0.6, 0)]
        pts += [P(0.6 + 0.4 * math.sin(math.pi * j / 8), 0.25 - 0.25 * math.cos(math.pi * j / 8)) for j in range(1, 8)]
        pts += [P(0.6, 0.5), P(0, 0.5)]
        draw.line(pts, fill=1.0, width=w, joint="curve")
        draw.line([P(0.45, 0.5), P(1.0, 1.0)], fill=1.0, width=w)
    pad = w + 4
    return (max(0, int(y0 * R) - pad), min(R, int((y0 + hgt) * R) + pad),
            max(0, int(x0 * R) - pad), min(R, int((x0 + wid) * R) + pad))


def _render_factor(size: int) -> int:
    return max(2, -(-256 // size))


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

# Whole normal reports, drawn with fixed weights so identical normal reports recur (as in real
# archives, where many normal studies share one template).
_NORMAL_REPORTS = (
    ("FINDINGS: The heart is normal in size. The mediastinum is unremarkable. The lungs are clear. "
     "IMPRESSION: No acute cardiopulmonary abnormality.", 0.3),
    ("FINDINGS: Heart size and mediastinal contours are within normal limits. The lungs are clear. "
     "No pleural effusion or pneumothorax. IMPRESSION: No acute cardiopulmonary abnormality.", 0.22),
    ("FINDINGS: The cardiomediastinal silhouette is normal. The lungs are clear bilaterally without focal "
     "consolidation. No pneumothorax or pleural effusion. IMPRESSION: No acute disease.", 0.16),
    ("FINDINGS: Normal heart size. Clear lungs. No effusion or pneumothorax. IMPRESSION: Normal chest.", 0.12),
    ("FINDINGS: The heart and mediastinum are normal. The lungs are clear without nodules or focal airspace "
     "disease. There is no pleural effusion or pneumothorax. IMPRESSION: No active disease.", 0.1),
    ("FINDINGS: Heart size is normal. Lungs are clear. No focal consolidation, pleural effusion, "
     "pneumothorax, or pulmonary nodule. IMPRESSION: No acute cardiopulmonary findings.", 0.1),
)
NORMAL_REPORTS = tuple(r for r, _ in _NORMAL_REPORTS)

_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}
_HEART_NORMAL = ("The heart is normal in size.", "Heart size is within normal limits.", "Normal heart size.",
                 "The cardiomediastinal silhouette is within normal limits.")
_CARDIO_FIND = ("{Sev} cardiomegaly.", "The heart is {adv} enlarged.", "The cardiac silhouette is {adv} enlarged.",
                "There is {sev} enlargement of the cardiac silhouette.")
_CARDIO_IMP = ("{Sev} cardiomegaly.", "{Sev} cardiomegaly without pulmonary edema.")
_EFF_FIND = ("{Sev} {side} pleural effusion.", "There is a {sev} {side}-sided pleural effusion.",
             "{Sev} {side} pleural effusion with blunting of the costophrenic angle.",
             "A {sev} {side} pleural effusion is present.")
_EFF_FIND_BI = ("Bilateral pleural effusions, {sevr} on the right and {sevl} on the left.",
                "{Sevr} right and {sevl} left pleural effusions.",
                "There are bilateral pleural effusions, {sevr} on the right and {sevl} on the left, with blunting "
                "of both costophrenic angles.")
_EFF_IMP = ("{Sev} {side} pleural effusion.", "{Sev} {side}-sided pleural effusion.")
_EFF_IMP_BI = ("Bilateral pleural effusions, {sevr} on the right and {sevl} on the left.",
               "{Sevr} right and {sevl} left pleural effusions.")
_PTX_FIND = ("{Sev} {side} pneumothorax with a visible pleural line.", "There is a {sev} {side}-sided pneumothorax.",
             "A {sev} {side} apical pneumothorax is present.",
             "{Sev} {side} pneumothorax. The visceral pleural line is displaced from the chest wall.")
_PTX_IMP = ("{Sev} {side} pneumothorax.", "{Sev} {side}-sided pneumothorax.")
_LOC = {"upper": ("{side} upper lobe", "{side} upper lung zone"),
        "middle": ("{side} middle lung zone",),
        "lower": ("{side} lower lobe", "{side} lower lung zone")}
_CONS_FIND = ("There is focal consolidation in the {loc}.", "Patchy airspace opacity in the {loc}, consistent with "
              "consolidation.", "Focal airspace disease is present in the {loc}.", "Patchy consolidation in the {loc}.")
_CONS_IMP = ("{Loc} consolidation, concerning for pneumonia.", "{Loc} airspace disease, likely pneumonia.",
             "{Loc} consolidation.")
_NOD_FIND = ("There is a rounded nodular opacity in the {loc}.", "A solitary pulmonary nodule projects over the {loc}.",
             "{Loc} nodule.")
_NOD_IMP = ("{Loc} pulmonary nodule. Recommend CT chest for further characterization.", "{Loc} nodule.",
            "Nodule in the {loc}; CT is recommended for further evaluation.")
_PACER_FIND = ("{Side} chest wall pacemaker with lead projecting over the cardiac silhouette.",
               "A {side}-sided pacemaker is present with its lead terminating over the heart.",
               "There is a {side} chest pacemaker generator with a single transvenous lead.")
_PACER_IMP = ("{Side} chest pacemaker in place.", "{Side}-sided pacemaker.",
              "{Side} chest wall pacemaker in expected position.")
_LINE_FIND = ("{Side}-sided central venous catheter with the tip in the superior vena cava.",
              "A {side} central line terminates in the SVC.", "{Side} central venous catheter, tip projecting over the SVC.")
_LINE_IMP = ("{Side} central venous catheter with tip in the SVC.", "{Side}-sided central line in satisfactory position.")
_NEG_NOUN = {"effusion": ("pleural effusion", "effusion"), "pneumothorax": ("pneumothorax",),
             "consolidation": ("focal consolidation", "focal airspace disease", "focal airspace opacity"),
             "nodule": ("pulmonary nodule", "suspicious pulmonary nodule")}
_NEG_FRAME = ("No {x}.", "There is no {x}.", "Negative for {x}.", "No evidence of {x}.")
_BONES = ("No acute osseous abnormality.", "The visualized osseous structures are intact.",
          "Bony structures are unremarkable.")
_CLEAR = ("The lungs are otherwise clear.", "Otherwise, the lungs are clear.")
_NO_ACUTE = ("No acute cardiopulmonary abnormality.", "No acute cardiopulmonary process.")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fmt(template: str, **kw: str) -> str:
    full = dict(kw)
    for key, value in kw.items():
        full[key[:1].upper() + key[1:]] = _cap(value)
    return template.format(**full)


def _join_or(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} or {items[1]}"
    return ", ".join(items[:-1]) + f", or {items[-1]}"


def _compose_report(findings: tuple[Finding, ...], rng: np.random.Generator) -> str:
    if not findings:
        i = int(rng.choice(len(_NORMAL_REPORTS), p=[w for _, w in _NORMAL_REPORTS]))
        return _NORMAL_REPORTS[i][0]
    present = {f.kind for f in findings}
    heart: list[str] = []
    devices: list[str] = []
    lungs: list[str] = []
    pleura: list[str] = []
    impression: list[str] = []
    effusions = [f for f in findings if f.kind == "effusion"]
    for f in findings:
        if f.kind == "cardiomegaly":
            kw = {"sev": _attr(f.severity), "adv": _ADVERB[_attr(f.severity)]}
            heart.append(_fmt(_pick(rng, _CARDIO_FIND), **kw))
            impression.append(_fmt(_pick(rng, _CARDIO_IMP), **kw))
        elif f.kind == "effusion":
            if len(effusions) == 2:
                if f is effusions[0]:
                    kw = {"sevr": _attr(effusions[0].severity), "sevl": _attr(effusions[1].severity)}
                    pleura.append(_fmt(_pick(rng, _EFF_FIND_BI), **kw))
                    impression.append(_fmt(_pick(rng, _EFF_IMP_BI), **kw))
            else:
                kw = {"sev": _attr(f.severity), "side": _attr(f.side)}
                pleura.append(_fmt(_pick(rng, _EFF_FIND), **kw))
                impression.append(_fmt(_pick(rng, _EFF_IMP), **kw))
        elif f.kind == "pneumothorax":
            kw = {"sev": _attr(f.severity), "side": _attr(f.side)}
            pleura.append(_fmt(_pick(rng, _PTX_FIND), **kw))
            impression.append(_fmt(_pick(rng, _PTX_IMP), **kw))
        elif f.kind in ("consolidation", "nodule"):
            loc = _pick(rng, _LOC[_attr(f.zone)]).format(side=f.side)
            find_t, imp_t = (_CONS_FIND, _CONS_IMP) if f.kind == "consolidation" else (_NOD_FIND, _NOD_IMP)
            lungs.append(_fmt(_pick(rng, find_t), loc=loc))
            impression.append(_fmt(_pick(rng, imp_t), loc=loc))
        elif f.kind == "pacemaker":
            devices.append(_fmt(_pick(rng, _PACER_FIND), side=_attr(f.side)))
            impression.append(_fmt(_pick(rng, _PACER_IMP), side=_attr(f.side)))
        elif f.kind == "central_line":
            devices.append(_fmt(_pick(rng, _LINE_FIND), side=_attr(f.side)))
            impression.append(_fmt(_pick(rng, _LINE_IMP), side=_attr(f.side)))
    if "cardiomegaly" not in present and rng.random() < 0.8:
        heart.append(_pick(rng, _HEART_NORMAL))
    if lungs and rng.random() < 0.5:
        lungs.append(_pick(rng, _CLEAR))
    # Negate a random subset of the absent findings.
    absent = [k for k in ("consolidation", "effusion", "pneumothorax", "nodule") if k not in present]
    negated = [k for k in absent if rng.random() < 0.65]
    negations = []
    if negated:
        nouns = [_pick(rng, _NEG_NOUN[k]) for k in negated]
        negations.append(_pick(rng, _NEG_FRAME).format(x=_join_or(nouns)))
    if rng.random() < 0.3:
        negations.append(_pick(rng, _BONES))
    order = int(rng.integers(3))
    if order == 0:
        body = heart + devices + lungs + pleura + negations
    elif order == 1:
        body = devices + heart + lungs + pleura + negations
    else:
        body = lungs + pleura + heart + devices + negations
    if all(f.kind in ("pacemaker", "central_line") for f in findings):
        impression.append(_pick(rng, _NO_ACUTE))
    if len(impression) == 1:
        imp = impression[0]
    else:
        imp = " ".join(f"{i}. {text}" for i, text in enumerate(impression, start=1))
    return f"FINDINGS: {' '.join(body)} IMPRESSION: {imp}"


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def study_id(seed: int, index: int) -> str:
    return f"phantom-{int(seed)}-{int(index):05d}"


def describe_study(seed: int, index: int) -> tuple[tuple[Finding, ...], str]:
    """The findings and report of study ``(seed, index)`` without rendering its image (fast).

    Always equal to ``generate_study(seed, index, size)``'s ``findings`` and ``report``, any size.
    """
    find_rng, _, report_rng, _ = _streams(seed, index)
    findings = _sample_findings(find_rng)
    return findings, _compose_report(findings, report_rng)


def generate_study(seed: int, index: int, size: int = 128) -> PhantomStudy:
    """One phantom study, deterministic in ``(seed, index, size)`` and independent of other indices.

    ``image`` is ``size x size`` uint8 grayscale. Findings, geometry and report depend only on
    ``(seed, index)``; ``size`` changes the rendering resolution (and the film grain).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be an int, got {type(size).__name__}")
    size = int(size)
    if size < _MIN_SIZE:
        raise ValueError(f"size must be >= {_MIN_SIZE}, got {size}")
    find_rng, anat_rng, report_rng, grain_rng = _streams(seed, index)
    findings = _sample_findings(find_rng)
    anatomy = _sample_anatomy(anat_rng, findings)
    report = _compose_report(findings, report_rng)
    k = _render_factor(size)
    R = size * k
    img = _render(anatomy, findings, R)
    img = img.reshape(size, k, size, k).mean(axis=(1, 3))
    # film grain at the output resolution, slightly stronger in the darker (lower-dose) areas
    grain = grain_rng.standard_normal((size, size)).astype(np.float32)
    img = img + anatomy.grain * (1.15 - 0.5 * img) * grain
    out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return PhantomStudy(id=study_id(seed, index), image=out, findings=findings, report=report)


# --------------------------------------------------------------------------------------------
# Regions: where the anatomy, the marker and the devices of a study are (for shortcut probes)
# --------------------------------------------------------------------------------------------

REGION_NAMES = ("right_lung", "left_lung", "heart", "marker", "pacemaker", "central_line")
_TILE = 32  # render pixels: a device (a thin line) is the union of its mask's boxes per tile


def _bbox(mask: np.ndarray, top: int = 0, left: int = 0) -> tuple[int, int, int, int] | None:
    """(c0, r0, c1, r1) of a boolean mask's True pixels, offset by (top, left); None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1, top + int(rows[-1]) + 1


def _tiled_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes whose union is ``mask``'s extent per tile: tight around thin, long shapes."""
    out = []
    for r in range(0, mask.shape[0], _TILE):
        for c in range(0, mask.shape[1], _TILE):
            box = _bbox(mask[r : r + _TILE, c : c + _TILE], r, c)
            if box is not None:
                out.append(box)
    return out


def study_regions(seed: int, index: int, size: int = 128) -> list[tuple[str, float, float, float, float]]:
    """Named boxes of study ``(seed, index)`` in its ``size`` image's pixels: (name, x0, y0, x1, y1).

    Names: ``right_lung`` and ``left_lung`` (the patient's sides), ``heart`` (the cardiac
    shadow), ``marker`` (the burnt-in side letter, the phantom's only burnt-in text), and, when
    drawn, ``pacemaker`` and ``central_line`` (several boxes each, tight around the device).
    Computed from the same random streams as :func:`generate_study` without changing them, so
    the images stay bit-for-bit the same; the masks behind the boxes are the rendering's own
    (lungs and heart: where their shapes are; marker and devices: where they were drawn)."""
    find_rng, anat_rng, _, _ = _streams(seed, index)
    findings = _sample_findings(find_rng)
    a = _sample_anatomy(anat_rng, findings)
    k = _render_factor(int(size))
    R = int(size) * k
    fr = _Frame(a, R)
    S, Y, LEFT = np.abs(fr.sx), fr.y, fr.sx > 0
    boxes: list[tuple[str, tuple[int, int, int, int]]] = []
    for side, name in ((0, "right_lung"), (1, "left_lung")):
        half = LEFT if side == 1 else ~LEFT
        box = _bbox((_lung_dist(S, Y, a, side) > 0) & half)
        if box is not None:
            boxes.append((name, box))
    in_height = (Y >= a.heart_top) & (Y <= a.heart_bot)
    heart = in_height & np.where(LEFT, S < _medi_boundary(a, 1, Y), S < _medi_boundary(a, 0, Y))
    box = _bbox(heart)
    if box is not None:
        boxes.append(("heart", box))
    mark = Image.new("F", (R, R), 0.0)
    r0, r1, c0, c1 = _draw_marker(ImageDraw.Draw(mark), a.marker, a.marker_xy, R)
    glyph = _blur(np.asarray(mark, dtype=np.float32)[r0:r1, c0:c1], 0.35 * R / 256.0) > 0.02
    box = _bbox(glyph, r0, c0)
    if box is not None:
        boxes.append(("marker", box))
    for i, f in enumerate(findings):
        if f.kind not in ("pacemaker", "central_line"):
            continue
        metal = Image.new("F", (R, R), 0.0)
        draw = ImageDraw.Draw(metal)
        g = a.fx[i]
        if f.kind == "pacemaker":  # the same shapes as _render draws
            gx, gy, gw, gh, gang = g["gen"]
            th = np.linspace(0.0, 2.0 * math.pi, 32, endpoint=False)
            ex = gw * np.sign(np.cos(th)) * np.abs(np.cos(th)) ** 0.4
            ey = gh * np.sign(np.sin(th)) * np.abs(np.sin(th)) ** 0.4
            poly = fr.to_px_array(gx + ex * math.cos(gang) - ey * math.sin(gang), gy + ex * math.sin(gang) + ey * math.cos(gang))
            draw.polygon([tuple(p) for p in poly.tolist()], fill=3.0)
            draw.line([fr.to_px(*p) for p in g["lead"]], fill=2.5, width=max(2, fr.width(g["lead_w"])), joint="curve")
        else:
            draw.line([fr.to_px(*p) for p in g["path"]], fill=2.5, width=max(2, fr.width(g["w"])), joint="curve")
        drawn = _blur(np.asarray(metal, dtype=np.float32), 0.5 * R / 256.0) > 0.05
        boxes += [(f.kind, b) for b in _tiled_boxes(drawn)]
    return [(name, c0 / k, r0 / k, c1 / k, r1 / k) for name, (c0, r0, c1, r1) in boxes]


def regions_csv(seed: int, n: int, size: int = 128) -> bytes:
    """The regions of studies ``0 .. n-1`` in the plain box format of ``datasets/regions.py``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "region", "x_min", "y_min", "x_max", "y_max"])
    for index in range(int(n)):
        for name, x0, y0, x1, y1 in study_regions(seed, index, size):
            writer.writerow([study_id(seed, index), name, *(f"{v:g}" for v in (x0, y0, x1, y1))])
    return buf.getvalue().encode("utf-8")


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG", optimize=False,
                                                                        compress_level=6)
    return buf.getvalue()


def write_split(out_dir: str | Path, *, seed: int, n: int, size: int = 128, split: str = "test") -> Path:
    """Write ``n`` studies (indices ``0 .. n-1``) as ``out_dir/images/<id>.png`` plus ``out_dir/manifest.csv``
    and ``out_dir/regions.csv`` (:func:`regions_csv`: where each study's lungs, heart, marker and
    devices are).

    The manifest has columns ``id,image,report,split`` (image paths relative to the manifest).
    PNGs are written with fixed settings, so the same arguments give byte-identical files. Each
    file is written to a temporary name and moved into place, so a half-written manifest (or
    image) never remains. Returns the manifest path.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["id", "image", "report", "split"])
    for index in range(int(n)):
        study = generate_study(seed, index, size)
        rel = f"images/{study.id}.png"
        atomic_write(out / rel, _png_bytes(study.image))
        writer.writerow([study.id, rel, study.report, split])
    manifest = out / "manifest.csv"
    atomic_write(manifest, buf.getvalue().encode("utf-8"))
    atomic_write(out / "regions.csv", regions_csv(seed, int(n), size))
    return manifest
