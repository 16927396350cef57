"""The gate: when cells, models and runs pass.

Public API::

    Thresholds, Verdict            # limits per model, patch, metric and level (thresholds.py)
    judge_cell(...) -> Verdict     # one cell: thresholds, then the saved baseline
    run_verdict(cells, ...) -> str # "error" | "incomplete" | "fail" | "pass"
    summarise(cells, models, ...)  # per-model verdict and robustness score, paired comparisons
    load_baseline, save_baseline   # baseline files (baseline.py)

Everything here is a pure function of numbers and settings; the engine measures, the gate
decides, the reports show.
"""

from .baseline import Baseline, check_compatible, load_baseline, save_baseline
from .judge import VERDICTS, judge_cell, run_verdict
from .scores import summarise
from .thresholds import Thresholds, Verdict, chance_levels, chance_recall, lower_is_better

__all__ = [
    "VERDICTS",
    "Baseline",
    "Thresholds",
    "Verdict",
    "chance_levels",
    "chance_recall",
    "check_compatible",
    "judge_cell",
    "load_baseline",
    "lower_is_better",
    "run_verdict",
    "save_baseline",
    "summarise",
]
