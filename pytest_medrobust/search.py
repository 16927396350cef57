"""Worst-case placement search: Hypothesis looks for the occluder placement that hurts a cell most.

A search cell (model, patch type, level > 0) evaluates :class:`~pytest_medrobust.occlusion.PlacementPolicy`
values: each occludes every image, and the metrics and the cell's thresholds are measured. It runs
in two passes, both seeded per cell (:func:`search_seed`) with the example database off:

1. **search** -- first the two explicit placements: the grid cell's own seeded random placement
   (``mode="grid"``) and the sensitivity-guided one (``mode="guided"``: each image's occluder
   centred on its most sensitive window, :mod:`pytest_medrobust.sensitivity`); then Hypothesis
   draws dataset-wide placements (``fixed``) and per-image ones inside each image's sensitive
   region (``region``), steering with ``target()`` toward the lowest primary metric. Nothing
   stops this pass early: it spends the whole budget (``search.max_examples`` placements, the
   two explicit ones included; fewer only when the space is exhausted). The worst placement
   found is the cell's value, so it can never be better than its grid cell or the guided one.
2. **shrink** -- when a drawn placement broke the gate, the same seeded run again, stopping at
   the first failure, which Hypothesis shrinks to the simplest placement that still fails
   (centred, no jitter, the patch's own piece count, dataset-wide before per-image). Pass 1's
   evaluations are memoised, so only the shrink steps cost.

Every evaluation is a pure function of the policy (no randomness outside the seeded placement),
so a replayed cell gives the same numbers and the CI profile never raises a Flaky error.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .cells import LEVEL_DECIMALS, cell_test_name, level_key
from .gate import lower_is_better

if TYPE_CHECKING:

    from .cells import Cell
    from .config import Settings
    from .gate import Verdict
    from .occlusion import PlacementPolicy
    from .runner import GridRunner, Measurement


class PlacementFailure(AssertionError):
    """Raised inside the shrink pass when a policy breaks the gate."""


@dataclass
class Found:
    """One evaluated placement."""

    policy: PlacementPolicy
    measurement: Measurement
    verdict: Verdict

    def to_json(self, metric: str) -> dict[str, Any]:
        return {"placement": self.policy.to_json(), "description": self.policy.describe(),
                "value": self.measurement.metrics[metric], "failed": not self.verdict.passed}


@dataclass
class SearchOutcome:
    worst: Found
    minimal_failure: Found | None
    metric: str
    evaluations: int  # placements evaluated by the search pass (the budget, unless exhausted)
    shrink_evaluations: int  # further placements the shrink pass evaluated
    budget: int
    grid_value: float
    guided_value: float | None
    replay: str
    explicit: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.minimal_failure is not None or not self.worst.verdict.passed

    # What the cell records and is judged by: the worst placement's measurement and, when any
    # placement failed, the failures (the worst's own, else the minimal failure's).
    @property
    def policy(self) -> PlacementPolicy:
        return self.worst.policy

    @property
    def measurement(self) -> Measurement:
        return self.worst.measurement

    @property
    def verdict(self) -> Verdict:
        if self.worst.verdict.passed and self.minimal_failure is not None:
            return self.minimal_failure.verdict
        return self.worst.verdict

    @property
    def shown(self) -> Found:
        """The placement a failure message and picture show: the minimal failing one if any."""
        return self.minimal_failure or self.worst

    def to_json(self) -> dict[str, Any]:
        return {
            **self.worst.to_json(self.metric),
            "failed": self.failed,
            "metric": self.metric,
            "evaluations": self.evaluations,
            "shrink_evaluations": self.shrink_evaluations,
            "budget": self.budget,
            "grid_value": self.grid_value,
            "guided_value": self.guided_value,
            "minimal_failure": self.minimal_failure.to_json(self.metric) if self.minimal_failure else None,
            "replay": self.replay,
        }


def search_strategy(patch: str, level: float) -> Any:
    """Dataset-wide placements, then per-image ones inside each image's sensitive region (what
    a failure shrinks toward: the first branch)."""
    from hypothesis import strategies as st

    from .strategies import placement_policies

    fixed = placement_policies(patch, level)
    return st.one_of(fixed, fixed.map(lambda p: replace(p, mode="region")))


def search_worst_placement(runner: GridRunner, cell: Cell) -> SearchOutcome:
    from hypothesis import HealthCheck, Phase, given, reject, target
    from hypothesis import seed as hypothesis_seed
    from hypothesis import settings as hypothesis_settings

    from . import occlusion
    from .occlusion import PlacementPolicy
    from .sensitivity import guides
    from .strategies import cell_settings

    settings = runner.settings
    metric = settings.primary_metric
    seed = settings.seed
    budget = settings.search.max_examples
    memo: dict[str, Found] = {}
    stats = runner.image_stats(cell.model)
    bound = guides(runner, cell.model)
    label_of_grid = (f"{occlusion.patch_label(occlusion.make_patch(cell.patch))}"
                     f"|level={cell.level:.{LEVEL_DECIMALS}f}|seed={seed}")

    def evaluate(policy: PlacementPolicy) -> Found:
        label = _label(policy, seed)
        if label not in memo:
            placed = policy.with_guides(bound)

            def occluder(images: torch.Tensor, ids: Sequence[str]) -> torch.Tensor:
                return occlusion.occlude_with_policy(images, ids, placed, cell.patch, cell.level, seed, stats=stats)[0]

            # The grid placement's images are the grid cell's: its cache entry serves both.
            measurement = runner.measure_with(cell.model, occluder, label_of_grid if policy.mode == "grid" else label)
            memo[label] = Found(policy, measurement, runner.verdict(cell, measurement))
        return memo[label]

    def score(found: Found) -> float:
        value = found.measurement.metrics[metric]
        return value if lower_is_better(metric) else -value  # target() maximises

    worst: list[Found] = []

    def consider(found: Found) -> None:
        if not worst or _worse(found.measurement.metrics[metric], worst[0].measurement.metrics[metric], metric):
            worst[:] = [found]

    grid_policy = PlacementPolicy(patch=occlusion.patch_label(occlusion.make_patch(cell.patch)), level=cell.level, mode="grid")
    explicit = [grid_policy, replace(grid_policy, mode="guided")]
    for policy in explicit:
        consider(evaluate(policy))
    drawn_budget = max(1, budget - len(explicit))
    cap = len(explicit) + drawn_budget  # the budget, or 3 when the budget is smaller

    profile = cell_settings(settings.search.profile, drawn_budget)
    # The database off in both passes: a rerun draws the same placements (no replayed examples).
    search_phases = (Phase.generate, Phase.target)
    # Rejected draws (past the budget) are not a sign of a bad strategy: no health check on them.
    quiet = (*profile.suppress_health_check, HealthCheck.filter_too_much)
    first = hypothesis_settings(profile, database=None, phases=search_phases, suppress_health_check=quiet)
    pinned = hypothesis_seed(search_seed(seed, cell))

    @given(policy=search_strategy(cell.patch, cell.level))
    def search(policy: PlacementPolicy) -> None:
        if len(memo) >= cap and _label(policy, seed) not in memo:
            reject()  # the targeting phase asked for more than the budget: not evaluated
        found = evaluate(policy)
        target(score(found), label=metric)
        consider(found)

    first(pinned(search))()
    evaluations = len(memo)

    minimal: Found | None = None
    if any(not f.verdict.passed for f in memo.values() if f.policy.mode in ("fixed", "region")):
        shrunk: list[Found] = []

        @given(policy=search_strategy(cell.patch, cell.level))
        def shrink(policy: PlacementPolicy) -> None:
            found = evaluate(policy)
            target(score(found), label=metric)  # as in pass 1, so the same placements come in the same order
            if not found.verdict.passed:
                shrunk[:] = [found]  # Hypothesis replays the shrunk example last
                raise PlacementFailure("\n".join(found.verdict.failures))

        second = hypothesis_settings(profile, database=None, phases=(*search_phases, Phase.shrink))
        try:
            second(pinned(shrink))()
        except PlacementFailure:
            pass
        minimal = shrunk[0] if shrunk else None
    if minimal is None:
        # Only an explicit placement failed (or the shrink pass met none): the first failing one
        # evaluated (the memo keeps the order: grid, guided, then the drawn ones).
        minimal = next((f for f in memo.values() if not f.verdict.passed), None)

    grid_value = runner.measure(cell.model, cell.patch, cell.level).metrics[metric]
    guided_value = memo[_label(explicit[1], seed)].measurement.metrics[metric]
    found_value = worst[0].measurement.metrics[metric]
    # The promise of the search (issue 13), checked in the code: never better than either.
    if _worse(grid_value, found_value, metric) or _worse(guided_value, found_value, metric):
        raise AssertionError(
            f"{cell.id}: the search's worst {metric} = {found_value} is better than the grid cell's {grid_value} "
            f"or the guided placement's {guided_value}"
        )
    # The replay gives back the reported (worst) value: the pytest command reruns the cell, the
    # snippet rebuilds the worst placement's masks and pixels.
    snippet = worst[0].policy.replay(seed, cell.patch, cell.level, stats, guides=bound)
    replay = replay_command(settings, cell, settings.config_file) + "\n" + snippet
    return SearchOutcome(worst[0], minimal, metric, evaluations, len(memo) - evaluations, budget, grid_value,
                         guided_value, replay)


def _label(policy: PlacementPolicy, seed: int) -> str:
    return f"policy={json.dumps(policy.to_json(), sort_keys=True)}|seed={seed}"


def replay_command(settings: Settings, cell: Cell, config_file: Path | None = None) -> str:
    """The pytest command that runs this search cell again and measures the same value.

    Every setting with a flag that shapes the numbers or the verdict (the verdict decides which
    placement the search stops at) is spelled out from the run's settings, whatever the command
    line was: the config files are read again underneath and the flags override them. What has
    no flag (model tables, thresholds, primary metric, search profile, loader options) comes from
    ``config_file`` (the run's ``--medrobust-config``, by absolute path) and from the project's
    pyproject.toml, so the command is meant to be run in the project folder.

    The run's models and patch types stay as they were: a threshold rule that names a model or
    patch of the run must still match one (config.validate_names); ``-k`` selects the cell."""
    from .options import OPTIONS

    values: dict[str, Any] = {
        "models": ",".join(settings.model_names),
        "dataset": settings.dataset,
        # Dataset options that have a flag; the others can only come from a config file.
        **{o.key: settings.dataset_options.get(o.key.partition(".")[2]) for o in OPTIONS
           if o.key and o.key.startswith("dataset_options.")},
        "levels": repr(level_key(cell.level)),
        "patches": ",".join(settings.patches),
        "k": ",".join(str(k) for k in settings.ks),
        "seed": settings.seed,
        # auto too: it may override a device the config files name.
        "device": settings.device,
        "precision": settings.precision,
        "batch_size": settings.batch_size,
        "search.max_examples": settings.search.max_examples,  # also switches the search cells on
        "bootstrap.resamples": settings.bootstrap.resamples,  # intervals decide under gate = "lower"
        "baseline.path": settings.baseline.path,
        "baseline.tolerance_abs": settings.baseline.tolerance_abs if settings.baseline.path else None,
        "baseline.allow_dataset_mismatch": settings.baseline.allow_dataset_mismatch or None,
    }
    words = ["pytest", "--medrobust-only"]
    if config_file is not None:
        words.append(f"--medrobust-config={shlex.quote(str(config_file))}")
    for option in OPTIONS:
        value = values.get(option.key) if option.key else None
        if value is None:
            continue
        words.append(option.flag if option.flag_only else f"{option.flag}={shlex.quote(str(value))}")
    words += ["-k", shlex.quote(_select(cell))]
    return " ".join(words)


# What pytest's -k accepts as one word (_pytest/mark/expression.py); a word matches a substring
# of a test's name.
_K_WORD = re.compile(r"(?:\w|:|\+|-|\.|\[|\]|\\|/)+")


def _select(cell: Cell) -> str:
    """A -k expression for this search cell only: the words of its test name, and-ed. A patch
    specification's parentheses, quotes and spaces cannot appear in -k, so they split words."""
    name = cell_test_name(cell)
    words = [w for w in _K_WORD.findall(name) if w not in ("and", "or", "not")]
    return " and ".join(words)


def search_seed(seed: int, cell: Cell) -> int:
    """The Hypothesis seed of a search cell: the same for every model (they are searched over
    the same placements) and for every run with the same seed."""
    digest = hashlib.sha256(f"{seed}|{cell.patch}|{level_key(cell.level)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _worse(a: float, b: float, metric: str) -> bool:
    return a > b if lower_is_better(metric) else a < b
