"""Shards of the grid: which share of the cells one process measures, and where its number comes from.

``--medrobust-shard I/N`` (1-based) runs the I-th of N shares. ``--medrobust-shard auto`` reads
the share from the engine that started the process:

=================== ============================================== ==========================
engine              variables                                      index
=================== ============================================== ==========================
GitLab ``parallel`` ``CI_NODE_INDEX``, ``CI_NODE_TOTAL``             1-based
SLURM job array     ``SLURM_ARRAY_TASK_ID`` with ``_MIN``, ``_MAX``   (id - min) / step + 1
                    and ``_COUNT`` (or ``_STEP``)
Kubernetes Indexed  ``JOB_COMPLETION_INDEX`` (0-based), the total    index + 1
Job                 from ``auto/N`` or ``MEDROBUST_SHARD_TOTAL``
=================== ============================================== ==========================

A GitHub Actions matrix sets no such variables: pass ``--medrobust-shard ${{ matrix.shard }}/N``.
A total given as ``auto/N`` or ``MEDROBUST_SHARD_TOTAL`` is checked against the engine's count.
No engine, two engines, or variables that disagree are a set-up error naming the variables.

The cells are assigned by estimated cost, not count (:func:`assign`), and the assignment is a
pure function of the grid and the recorded plan (:func:`plan`), so every shard process, and
``medrobust merge`` later, computes the same one.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .cells import Cell
    from .config import Settings
    from .models import ModelSpec

TOTAL_VARIABLE = "MEDROBUST_SHARD_TOTAL"
ENGINES = {"gitlab": "GitLab parallel", "slurm": "SLURM job array", "kubernetes": "Kubernetes Indexed Job"}
_EXPLICIT = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")
_AUTO = re.compile(r"\s*auto\s*(?:/\s*([0-9]+)\s*)?")


@dataclass(frozen=True)
class Share:
    """Shard ``index`` of ``count`` (1-based), and where it came from: ``engine`` is "option"
    for an explicit ``I/N``, else a key of :data:`ENGINES`; ``variables`` are the environment
    variables it was read from."""

    index: int
    count: int
    engine: str = "option"
    variables: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def source(self) -> str:
        if self.engine == "option":
            return "given as I/N"
        shown = ", ".join(f"{k}={v}" for k, v in self.variables)
        return f"{ENGINES[self.engine]} ({shown})"

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "variables": dict(self.variables)}


@dataclass(frozen=True)
class AutoShard:
    """``auto`` or ``auto/N`` as written in a config source, resolved from the environment once
    every source is read (a later source may replace it)."""

    total: int | None
    where: str

    def resolve(self, environ: Mapping[str, str] | None = None) -> Share:
        return share_from_environment(os.environ if environ is None else environ, self.total, self.where)


def parse_shard(value: Any, where: str) -> Share | AutoShard | None:
    """``I/N`` with 1 <= I <= N, ``auto`` or ``auto/N``; None or "" for no sharding."""
    if value in (None, ""):
        return None
    text = str(value)
    auto = _AUTO.fullmatch(text)
    if auto:
        total = int(auto[1]) if auto[1] else None
        if total is not None and total < 1:
            raise ConfigError(f"{where}: auto/N needs N >= 1, got {value!r}")
        return AutoShard(total, where)
    explicit = _EXPLICIT.fullmatch(text)
    if not explicit:
        raise ConfigError(f"{where}: expected i/n such as 1/4, or auto, or auto/N; got {value!r}")
    i, n = int(explicit[1]), int(explicit[2])
    if n < 1 or not 1 <= i <= n:
        raise ConfigError(f"{where}: expected i/n with 1 <= i <= n, got {value!r}")
    return Share(i, n)


def _int(environ: Mapping[str, str], name: str, where: str) -> int:
    raw = environ[name]
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigError(f"{where}: auto: {name}={raw!r} is not an integer") from None


def _gitlab(env: Mapping[str, str], where: str) -> tuple[int, int, list[str]] | None:
    if "CI_NODE_INDEX" not in env:
        if "CI_NODE_TOTAL" in env and env["CI_NODE_TOTAL"].strip() != "1":
            raise ConfigError(
                f"{where}: auto: CI_NODE_TOTAL={env['CI_NODE_TOTAL']} but CI_NODE_INDEX is not set (GitLab sets "
                "both for a job with parallel: N)"
            )
        return None  # GitLab sets CI_NODE_TOTAL=1 in every job without parallel:
    if "CI_NODE_TOTAL" not in env:
        raise ConfigError(f"{where}: auto: CI_NODE_INDEX is set but CI_NODE_TOTAL is not (GitLab sets both)")
    index, total = _int(env, "CI_NODE_INDEX", where), _int(env, "CI_NODE_TOTAL", where)
    if total < 1 or not 1 <= index <= total:
        raise ConfigError(f"{where}: auto: CI_NODE_INDEX={index} is not in 1..CI_NODE_TOTAL={total}")
    return index, total, ["CI_NODE_INDEX", "CI_NODE_TOTAL"]


_SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX")


def _slurm(env: Mapping[str, str], where: str) -> tuple[int, int, list[str]] | None:
    """A task of an evenly spaced array (``--array=0-2``, ``1-3``, ``0-10:5``, ``1,3,5``) is
    shard (id - min) / step + 1 of count; any other array cannot be numbered 1..N."""
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    absent = [v for v in _SLURM if v not in env]
    if absent or ("SLURM_ARRAY_TASK_COUNT" not in env and "SLURM_ARRAY_TASK_STEP" not in env):
        missing = absent or ["SLURM_ARRAY_TASK_COUNT (or SLURM_ARRAY_TASK_STEP)"]
        raise ConfigError(f"{where}: auto: SLURM_ARRAY_TASK_ID is set but {', '.join(missing)} not (sbatch --array sets them)")
    task, low, high = (_int(env, v, where) for v in _SLURM)
    used = list(_SLURM)
    step = _int(env, "SLURM_ARRAY_TASK_STEP", where) if "SLURM_ARRAY_TASK_STEP" in env else None
    if "SLURM_ARRAY_TASK_COUNT" in env:
        count = _int(env, "SLURM_ARRAY_TASK_COUNT", where)
        used.append("SLURM_ARRAY_TASK_COUNT")
    else:
        used.append("SLURM_ARRAY_TASK_STEP")
        count = (high - low) // step + 1 if step and step > 0 else 0
    spacing = (high - low) // (count - 1) if count > 1 else 1
    shown = ", ".join(f"{v}={env[v]}" for v in used)
    regular = count >= 1 and high >= low and (count == 1 or (spacing > 0 and low + spacing * (count - 1) == high))
    if step is not None and count > 1 and step != spacing:
        regular = False  # the step slurm reports disagrees with the spacing of min, max and count
    if not regular or not low <= task <= high or (task - low) % spacing:
        raise ConfigError(
            f"{where}: auto: the SLURM array ({shown}) is not an evenly spaced range that task "
            f"{task} belongs to; submit it as --array=A-B or --array=A-B:S, or pass --medrobust-shard I/N"
        )
    return (task - low) // spacing + 1, count, used


def _kubernetes(env: Mapping[str, str], where: str, total: int | None) -> tuple[int, int, list[str]] | None:
    if "JOB_COMPLETION_INDEX" not in env:
        return None
    if total is None:
        raise ConfigError(
            f"{where}: auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but the job's completions "
            f"are not: pass --medrobust-shard auto/N or set {TOTAL_VARIABLE}=N"
        )
    index = _int(env, "JOB_COMPLETION_INDEX", where)
    if not 0 <= index < total:
        raise ConfigError(f"{where}: auto: JOB_COMPLETION_INDEX={index} is not in 0..{total - 1} (total {total})")
    return index + 1, total, ["JOB_COMPLETION_INDEX"]


def share_from_environment(env: Mapping[str, str], total: int | None, where: str) -> Share:
    """The share an engine's variables give; ``total`` (from ``auto/N``) or ``MEDROBUST_SHARD_TOTAL``
    is the declared shard count, which must agree with the engine's."""
    declared, declared_by = total, "auto/N"
    if TOTAL_VARIABLE in env:
        from_env = _int(env, TOTAL_VARIABLE, where)
        if from_env < 1:
            raise ConfigError(f"{where}: auto: {TOTAL_VARIABLE}={from_env} must be >= 1")
        if declared is not None and declared != from_env:
            raise ConfigError(f"{where}: auto/{declared} disagrees with {TOTAL_VARIABLE}={from_env}")
        declared, declared_by = from_env, TOTAL_VARIABLE
    found = {
        name: share
        for name, share in (
            ("gitlab", _gitlab(env, where)), ("slurm", _slurm(env, where)), ("kubernetes", _kubernetes(env, where, declared))
        )
        if share is not None
    }
    if len(found) > 1:
        shown = "; ".join(f"{ENGINES[n]}: {', '.join(f'{v}={env[v]}' for v in s[2])}" for n, s in found.items())
        raise ConfigError(
            f"{where}: auto: the variables of more than one engine are set ({shown}); pass --medrobust-shard I/N"
        )
    if not found:
        hint = (
            " GitHub Actions sets none: pass --medrobust-shard ${{ matrix.shard }}/N." if env.get("GITHUB_ACTIONS") else ""
        )
        raise ConfigError(
            f"{where}: auto: no shard variables found (GitLab parallel: CI_NODE_INDEX and CI_NODE_TOTAL; "
            "SLURM job array: SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_MAX, SLURM_ARRAY_TASK_COUNT; "
            f"Kubernetes Indexed Job: JOB_COMPLETION_INDEX with {TOTAL_VARIABLE} or auto/N).{hint}"
        )
    ((engine, (index, count, used)),) = found.items()
    if declared is not None and declared != count and engine != "kubernetes":
        raise ConfigError(
            f"{where}: auto: {declared_by} says {declared} shards but {ENGINES[engine]} runs {count} "
            f"({', '.join(f'{v}={env[v]}' for v in used)})"
        )
    if engine == "kubernetes" and declared_by == TOTAL_VARIABLE:
        used.append(TOTAL_VARIABLE)
    return Share(index, count, engine, tuple((v, env[v]) for v in used))


# --- balancing by estimated cost -------------------------------------------------------------

PLAN_METHOD = "cost-cuts-1"
# Image-encoder cost in GFLOP per image, counted once with torch.utils.flop_counter.FlopCounterMode
# (random weights, one image at the model's input size). An estimate of relative cost, not a
# timing: every shard process computes the same numbers. Unknown models count as ViT-B/32.
ENCODER_GFLOPS = {
    "demo": 0.0234,  # the bundled demo dual encoder at 128 x 128
    "ViT-B-32": 5.89,
    "ViT-B-16": 22.5,
    "ViT-L-14": 103.8,
    "RN50": 12.2,
    "swin-tiny": 8.70,
    "resnet50": 8.18,
}
DEFAULT_GFLOPS = ENCODER_GFLOPS["ViT-B-32"]
# Passes over the images, per model and shard, before its first cell: the clean measurement
# (every occluded cell's verdict needs it) and the reports' text embeddings, counted as one each.
OVERHEAD_PASSES = 2


def model_gflops(spec: ModelSpec) -> float:
    """The estimated image-encoder cost of a model, from its adapter and options (nothing loaded)."""
    from .models import BUILTIN_FACTORIES

    factory = spec.factory or BUILTIN_FACTORIES.get(spec.name, "")
    module = factory.partition(":")[0].rsplit(".", 1)[-1]
    options = spec.options
    if module == "demo":
        return ENCODER_GFLOPS["demo"]
    if module == "clip" and not options.get("hf_dir"):
        arch = str(options.get("model_name", "ViT-B-32")).replace("/", "-")
        return ENCODER_GFLOPS.get(arch, DEFAULT_GFLOPS)
    if module == "cxr_repair":
        return ENCODER_GFLOPS["ViT-B-32"]
    if module in ("medclip", "cxr_clip"):
        return ENCODER_GFLOPS["resnet50" if options.get("variant") == "resnet50" else "swin-tiny"]
    return DEFAULT_GFLOPS


def plan(settings: Settings) -> dict[str, Any]:
    """What the assignment is computed from besides the grid: recorded in each shard's results so
    that ``medrobust merge`` rebuilds the same assignment."""
    return {"method": PLAN_METHOD, "model_gflops": {s.name: model_gflops(s) for s in settings.models}}


def cell_passes(cell: Cell, search_examples: int) -> int:
    """Passes over the images a cell costs beyond its model's overhead: none for a clean cell
    (the clean measurement is shared), one for an occluded grid cell, up to ``search_examples``
    (Hypothesis's example budget) for a search cell."""
    if cell.kind == "search":
        return max(1, search_examples)
    return 1 if cell.level > 0 else 0


def assign(cells: Sequence[Cell], gflops: Mapping[str, float], count: int, search_examples: int) -> list[int]:
    """The shard (1..count) of each cell, by estimated cost.

    Cost of a cell = images x model GFLOP x passes (:func:`cell_passes`); the images are common
    to every cell, so they drop out. The cells of one model share its load, its text embeddings
    and its clean measurement (:data:`OVERHEAD_PASSES`), paid once in every shard that holds any
    of its cells. So the cells stay in grid order (model by model) and the grid is cut into
    ``count`` consecutive runs where its cumulative cost is nearest k/count of the total: a
    model is split across at most two neighbouring shards per cut (at most count - 1 models
    pay their overhead twice), and each shard's cost is within one cell (plus one overhead) of
    the mean. With at least ``count`` cells no shard is empty. Pure arithmetic on the inputs in
    a fixed order: the same grid and plan give the same assignment in every process."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    weights: list[float] = []
    seen: set[str] = set()
    for cell in cells:
        passes = cell_passes(cell, search_examples) + (OVERHEAD_PASSES if cell.model not in seen else 0)
        seen.add(cell.model)
        weights.append(gflops[cell.model] * passes)
    prefix = [0.0]
    for weight in weights:
        prefix.append(prefix[-1] + weight)
    n, total = len(cells), prefix[-1]
    cuts = [0]
    for k in range(1, count):
        target = total * k / count
        b = bisect_left(prefix, target)
        if b > n or (b > 0 and target - prefix[b - 1] <= prefix[b] - target):
            b -= 1
        low = cuts[-1] + (1 if n >= count else 0)
        high = n - (count - k) if n >= count else n
        cuts.append(min(max(b, low), high))
    cuts.append(n)
    shard_of: list[int] = []
    for k in range(count):
        shard_of += [k + 1] * (cuts[k + 1] - cuts[k])
    return shard_of


def shard_costs(
    cells: Sequence[Cell], shards: Sequence[int], gflops: Mapping[str, float], count: int, search_examples: int
) -> list[float]:
    """Each shard's estimated cost in GFLOP per image of the dataset, its models' overheads included."""
    costs = [0.0] * count
    models: list[set[str]] = [set() for _ in range(count)]
    for cell, shard in zip(cells, shards, strict=True):
        costs[shard - 1] += gflops[cell.model] * cell_passes(cell, search_examples)
        models[shard - 1].add(cell.model)
    for k in range(count):
        costs[k] += sum(gflops[m] * OVERHEAD_PASSES for m in models[k])
    return costs


def grid_cells(settings: Settings) -> list[Cell]:
    """Every cell of the run's grid, in collection order."""
    from .items import model_cells

    search = settings.search
    return [
        c for m in settings.model_names
        for c in model_cells(m, settings.patches, settings.levels, search.enabled, search.levels if search.enabled else ())
    ]


def _assigned(settings: Settings) -> tuple[Share, list[Cell], list[int]]:
    """The run's share, every cell of the grid and the shard each is assigned to."""
    share = settings.shard
    assert isinstance(share, Share), "resolve the shard before collection"
    cells = grid_cells(settings)
    return share, cells, assign(cells, plan(settings)["model_gflops"], share.count, settings.search.max_examples)


def share_cells(settings: Settings) -> set[Cell]:
    """The cells of the run's share (``settings.shard``): what collection keeps."""
    share, cells, shards = _assigned(settings)
    return {c for c, s in zip(cells, shards, strict=True) if s == share.index}


def in_share(settings: Settings) -> Callable[[Cell], bool]:
    """Whether a collected cell belongs to this run's share: its grid and search cells, and the
    sensitivity maps of each model whose first cell is here (the model is loaded here anyway, so
    every model's maps are made by exactly one shard)."""
    share, cells, shards = _assigned(settings)
    mine = {c for c, s in zip(cells, shards, strict=True) if s == share.index}
    owner: dict[str, int] = {}
    for cell, index in zip(cells, shards, strict=True):
        owner.setdefault(cell.model, index)
    return lambda cell: cell in mine or (cell.kind == "sensitivity" and owner.get(cell.model) == share.index)


def describe(settings: Settings) -> dict[str, Any]:
    """The share for the results JSON and the header: its engine and variables, its cells and
    its estimated part of the grid's cost."""
    share, cells, shards = _assigned(settings)
    costs = shard_costs(cells, shards, plan(settings)["model_gflops"], share.count, settings.search.max_examples)
    total = sum(costs)
    return {
        **share.to_json(),
        "cells": shards.count(share.index),
        "of_cells": len(cells),
        "estimated_share": round(costs[share.index - 1] / total, 4) if total else 0.0,
    }


def header_line(settings: Settings) -> str:
    share = settings.shard
    assert isinstance(share, Share)
    info = describe(settings)
    return (
        f"medrobust: shard {share} ({share.source()}): {info['cells']} of {info['of_cells']} cells, "
        f"~{info['estimated_share']:.0%} of the grid's estimated cost"
    )
