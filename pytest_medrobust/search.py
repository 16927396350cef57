"""Worst-case placement search: Hypothesis looks for the occluder placement that breaks a cell.

A search cell (model, patch type, level > 0) asks Hypothesis for dataset-wide
:class:`~pytest_medrobust.occlusion.PlacementPolicy` values, occludes every image by the policy,
measures the metrics and checks the cell's thresholds. ``target()`` steers the search toward the
lowest primary metric; when a policy breaks the gate, Hypothesis shrinks it to the simplest one
that still does (centred, no jitter, fewest pieces), which is what the failure reports, with a
picture and the code to replay it.

Every evaluation is a pure function of the policy (no randomness outside the seeded placement),
so a replayed example gives the same numbers and the CI profile (derandomised) never raises a
Flaky error. Evaluations are memoised by policy, so shrinking re-visits cost nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .cells import cell_test_name, level_key
from .gate import lower_is_better

if TYPE_CHECKING:

    from .cells import Cell
    from .config import Settings
    from .gate import Verdict
    from .occlusion import PlacementPolicy
    from .runner import GridRunner, Measurement


class PlacementFailure(AssertionError):
    """Raised inside the Hypothesis test when a policy breaks the gate."""


@dataclass
class SearchOutcome:
    policy: PlacementPolicy
    measurement: Measurement
    verdict: Verdict
    failed: bool
    metric: str
    evaluations: int
    replay: str

    def to_json(self) -> dict[str, Any]:
        return {
            "placement": self.policy.to_json(),
            "description": self.policy.describe(),
            "failed": self.failed,
            "metric": self.metric,
            "value": self.measurement.metrics[self.metric],
            "evaluations": self.evaluations,
            "replay": self.replay,
        }


def search_worst_placement(runner: GridRunner, cell: Cell) -> SearchOutcome:
    from hypothesis import given, target
    from hypothesis import seed as hypothesis_seed

    from . import occlusion
    from .strategies import cell_settings, placement_policies

    settings = runner.settings
    metric = settings.primary_metric
    seed = settings.seed
    memo: dict[str, tuple[Measurement, Verdict]] = {}
    stats = runner.image_stats(cell.model)
    state: dict[str, Any] = {"worst": None, "failure": None}

    def evaluate(policy: PlacementPolicy) -> tuple[Measurement, Verdict]:
        label = f"policy={json.dumps(policy.to_json(), sort_keys=True)}|seed={seed}"
        if label not in memo:

            def occluder(images: torch.Tensor, ids: Sequence[str]) -> torch.Tensor:
                return occlusion.occlude_with_policy(images, ids, policy, cell.patch, cell.level, seed, stats=stats)[0]

            measurement = runner.measure_with(cell.model, occluder, label)
            memo[label] = (measurement, runner.verdict(cell, measurement))
        return memo[label]

    @given(policy=placement_policies(cell.patch, cell.level))
    def search(policy: PlacementPolicy) -> None:
        measurement, verdict = evaluate(policy)
        value = measurement.metrics[metric]
        # target() maximises: aim at the lowest recall (or the highest rank).
        target(value if lower_is_better(metric) else -value, label=metric)
        worst = state["worst"]
        if worst is None or _worse(value, worst[1].metrics[metric], metric):
            state["worst"] = (policy, measurement, verdict)
        if not verdict.passed:
            # Hypothesis replays the shrunk example last, so this ends as the minimal failure.
            state["failure"] = (policy, measurement, verdict)
            raise PlacementFailure("\n".join(verdict.failures))

    profile = cell_settings(settings.search.profile, settings.search.max_examples)
    if profile.derandomize:
        # Seeded from the run's seed and the cell, not from this function's source text (what
        # derandomize hashes): the placements tried stay the same across versions and edits.
        search = hypothesis_seed(search_seed(seed, cell))(search)
    run = profile(search)
    try:
        run()
    except PlacementFailure:
        pass
    failed = state["failure"] is not None
    policy, measurement, verdict = state["failure"] if failed else state["worst"]
    replay = replay_command(settings, cell, settings.config_file) + "\n" + policy.replay(seed, cell.patch, cell.level, stats)
    return SearchOutcome(policy, measurement, verdict, failed, metric, len(memo), replay)


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
