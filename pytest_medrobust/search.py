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

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .gate import lower_is_better

if TYPE_CHECKING:
    from .cells import Cell
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

    run = cell_settings(settings.search.profile, settings.search.max_examples)(search)
    try:
        run()
    except PlacementFailure:
        pass
    failed = state["failure"] is not None
    policy, measurement, verdict = state["failure"] if failed else state["worst"]
    replay = (
        " ".join(
            ["pytest --medrobust-only"]
            + [f"--medrobust-{opt}={shlex.quote(str(val))}" for opt, val in _replay_options(settings, cell)]
            + ["-k", "worst_placement"]
        )
        + "\n"
        + policy.replay(seed=seed, patch=cell.patch, level=cell.level)
    )
    return SearchOutcome(policy, measurement, verdict, failed, metric, len(memo), replay)


def _replay_options(settings: Any, cell: Cell) -> list[tuple[str, Any]]:
    """Options that select exactly this search cell, on top of the run's own configuration."""
    options: list[tuple[str, Any]] = [
        ("models", cell.model),
        ("patches", cell.patch),
        ("levels", cell.level),
        ("seed", settings.seed),
    ]
    if settings.dataset:
        options.append(("dataset", settings.dataset))
    return options


def _worse(a: float, b: float, metric: str) -> bool:
    return a > b if lower_is_better(metric) else a < b
