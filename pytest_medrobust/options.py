"""Every command-line option of the plugin, in one table.

The table drives both ``pytest_addoption`` and the settings: an option's ``key`` is where its
value goes in the ``[tool.medrobust]`` structure (``"dataset"``, ``"baseline.path"``), so the
command line is one more configuration source, parsed and checked by the same code as the
TOML files. Adding an option is one row here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Option:
    flag: str
    help: str
    key: str | None = None  # dotted path in the config table; None: not a setting
    metavar: str | None = None
    flag_only: bool = False  # a switch: store_true
    convert: Callable[[Any], Any] | None = None  # the switch's or value's config value

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--medrobust", "run the robustness grid", flag_only=True),
    Option("--medrobust-only", "run the robustness grid and collect nothing else (implies --medrobust)", flag_only=True),
    Option("--medrobust-models", "comma-separated model names (default: demo-plain,demo-occaug)", "models", "NAMES"),
    Option(
        "--medrobust-dataset",
        "manifest path, or loader:path; unset: the bundled demo dataset (an empty value is an error)",
        "dataset",
        "SPEC",
    ),
    Option("--medrobust-image-root", "folder that relative image paths of a manifest are taken against",
           "dataset_options.image_root", "DIR"),
    Option("--medrobust-limit", "use a seeded, stable subset of N rows of the dataset", "dataset_options.limit", "N"),
    Option(
        "--medrobust-on-bad-rows",
        "bad dataset rows: error (default) lists them and stops; drop skips and records them",
        "dataset_options.on_bad_rows",
        "error|drop",
    ),
    Option("--medrobust-levels", "occluded area fractions in [0, 1) (default: 0,0.1,0.2,0.3,0.5)", "levels", "LEVELS"),
    Option(
        "--medrobust-patches",
        "comma-separated patch types (default: black_box,white_box,noise_box,blur_box,annotation)",
        "patches",
        "NAMES",
    ),
    Option("--medrobust-k", "Recall@k cut-offs (default: 1,5,10)", "k", "KS"),
    Option("--medrobust-seed", "seed of every occluder placement, subset and bootstrap (default: 0)", "seed", "INT"),
    Option("--medrobust-device", "auto, cpu, cuda or cuda:N (default: auto)", "device", "DEVICE"),
    Option("--medrobust-precision", "fp32 (default; auto means fp32), bf16 or fp16 autocast", "precision", "P"),
    Option("--medrobust-cpu-allocator", "tuned (default: glibc keeps freed activations for the next batch, "
           "see docs/performance.md) or system", "cpu_allocator", "tuned|system"),
    Option("--medrobust-batch-size", "images per forward pass (default: 64)", "batch_size", "N"),
    Option("--medrobust-report-dir", "where reports are written (default: reports/)", "report_dir", "DIR"),
    Option(
        "--medrobust-per-query",
        "also write medrobust-queries.jsonl: each study's rank of its own report and image, per cell",
        flag_only=True,
    ),
    Option("--medrobust-config", "a TOML file with a [tool.medrobust] table", metavar="FILE"),
    Option("--medrobust-cache-dir", "embedding cache (default: .medrobust_cache)", "cache_dir", "DIR"),
    Option("--medrobust-no-cache", "neither read nor write the cache", "cache", flag_only=True, convert=lambda on: not on),
    Option("--medrobust-cache-clear", "empty the cache before the run", flag_only=True),
    Option("--medrobust-shard", "run the I-th of N cost-balanced shares of the grid, or auto: from GitLab, SLURM or "
           "Kubernetes variables (merge with `medrobust merge`)", "shard", "I/N|auto"),
    Option("--medrobust-bootstrap", "bootstrap resamples per cell for the intervals (default: 1000; 0 off)",
           "bootstrap.resamples", "N"),
    Option("--medrobust-baseline", "fail cells whose metrics fell against this saved baseline", "baseline.path", "PATH"),
    Option("--medrobust-save-baseline", "save this run's metrics as a baseline", "baseline.save_path", "PATH"),
    Option("--medrobust-baseline-tolerance", "allowed fall against the baseline (default: 0.02)",
           "baseline.tolerance_abs", "DELTA"),
    Option(
        "--medrobust-allow-baseline-mismatch",
        "compare with a baseline made on a different dataset fingerprint",
        "baseline.allow_dataset_mismatch",
        flag_only=True,
        convert=lambda on: True,
    ),
    Option(
        "--medrobust-search-examples",
        "Hypothesis placements tried per search cell (default: 8; 0 turns the search cells off)",
        "search.max_examples",
        "N",
    ),
    Option("--medrobust-sensitivity-images", "images per model in the occlusion sensitivity maps (default: off; 0 off)",
           "sensitivity.images", "N"),
    Option("--medrobust-sensitivity-window", "sensitivity window side in model input pixels (default: 1/8 of the side)",
           "sensitivity.window", "PX"),
    Option("--medrobust-sensitivity-stride", "sensitivity window step in pixels (default: half the window)",
           "sensitivity.stride", "PX"),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("medrobust", "robustness gate for image-report retrieval models")
    for option in OPTIONS:
        if option.flag_only:
            group.addoption(option.flag, action="store_true", default=False, help=option.help)
        else:
            group.addoption(option.flag, metavar=option.metavar, default=None, help=option.help)


def command_line_table(config: pytest.Config) -> dict[str, Any]:
    """The options given on the command line as a ``[tool.medrobust]``-shaped table (values
    as strings, parsed by the config code like any TOML value)."""
    table: dict[str, Any] = {}
    for option in OPTIONS:
        if option.key is None:
            continue
        value = config.getoption(option.dest)
        if value is None or (option.flag_only and not value):
            continue
        if option.convert is not None:
            value = option.convert(value)
        _set(table, option.key.split("."), value)
    return table


def _set(table: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        table = table.setdefault(part, {})
    table[path[-1]] = value


def settings_keys() -> Mapping[str, str]:
    """Option flag -> config key, for messages that name the flag of a bad value."""
    return {o.key: o.flag for o in OPTIONS if o.key is not None}
