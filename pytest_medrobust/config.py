"""Settings of a gate run, merged from pyproject.toml, a config file and the command line.

Precedence, lowest first: built-in defaults, ``[tool.medrobust]`` in the rootdir's
``pyproject.toml``, the file given to ``--medrobust-config`` (its ``[tool.medrobust]`` table, or
its top level when it has none), then command-line options. Every bad value raises
:class:`~pytest_medrobust.errors.ConfigError` naming the option or key and where it came from.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, MedrobustError
from .models import ModelSpec
from .thresholds import Thresholds

if TYPE_CHECKING:
    import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MODELS = ("demo-plain", "demo-occaug")
DEFAULT_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5)
DEFAULT_PATCHES = ("black_box", "white_box", "noise_box", "blur_box", "annotation")
DEFAULT_KS = (1, 5, 10)
DEVICES = ("auto", "cpu", "cuda")

KNOWN_KEYS = {
    "models", "dataset", "dataset_options", "levels", "patches", "k", "seed", "device", "report_dir",
    "thresholds", "batch_size", "primary_metric", "search", "bootstrap", "baseline", "cache_dir", "cache",
    "precision", "shard",
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class BootstrapSettings:
    """Percentile bootstrap of every recall (seeded by the run's seed)."""

    resamples: int = 1000
    confidence: float = 0.95


@dataclass(frozen=True)
class BaselineSettings:
    """Compare each cell with a saved baseline (``--medrobust-baseline``)."""

    path: Path | None = None
    save_path: Path | None = None
    tolerance_abs: float | None = 0.02
    tolerance_rel: float | None = None
    metrics: tuple[str, ...] | None = None  # None: every recall the cell measures
    allow_dataset_mismatch: bool = False


@dataclass(frozen=True)
class SearchSettings:
    """The Hypothesis worst-placement cells."""

    enabled: bool = True
    levels: tuple[float, ...] | None = None  # None: every occluded level of the grid
    max_examples: int = 8
    profile: str = "medrobust-ci"

    @property
    def cache_policies(self) -> bool:
        """Cache each evaluated placement's embeddings on disk only under the CI profile, whose
        example count is bounded; the explore profile would fill the disk."""
        return self.profile == "medrobust-ci"


@dataclass(frozen=True)
class Settings:
    models: tuple[ModelSpec, ...] = tuple(ModelSpec(n) for n in DEFAULT_MODELS)
    # Every model table seen in any source, so a later plain name can select a defined model.
    model_definitions: Mapping[str, ModelSpec] = field(default_factory=dict)
    dataset: str | None = None
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    levels: tuple[float, ...] = DEFAULT_LEVELS
    patches: tuple[str, ...] = DEFAULT_PATCHES
    ks: tuple[int, ...] = DEFAULT_KS
    seed: int = 0
    device: str = "auto"
    report_dir: Path = Path("reports")
    thresholds: Thresholds = field(default_factory=Thresholds.defaults)
    batch_size: int = 64
    primary_metric: str = "i2t_unique_R@5"
    search: SearchSettings = field(default_factory=SearchSettings)
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    cache_dir: Path = Path(".medrobust_cache")
    cache: bool = True
    precision: str = "auto"  # auto: bf16 autocast on CUDA where supported, fp32 on CPU
    shard: tuple[int, int] | None = None  # (index, count), 1-based index

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def to_json(self) -> dict[str, Any]:
        return {
            "models": self.model_names,
            "dataset": self.dataset,
            "dataset_options": {k: v for k, v in self.dataset_options.items()},
            "levels": list(self.levels),
            "patches": list(self.patches),
            "ks": list(self.ks),
            "seed": self.seed,
            "device": self.device,
            "batch_size": self.batch_size,
            "primary_metric": self.primary_metric,
            "thresholds": self.thresholds.to_json(),
            "search": {
                "enabled": self.search.enabled,
                "levels": list(self.search.levels) if self.search.levels is not None else None,
                "max_examples": self.search.max_examples,
                "profile": self.search.profile,
            },
            "bootstrap": {"resamples": self.bootstrap.resamples, "confidence": self.bootstrap.confidence},
            "cache": self.cache,
            "precision": self.precision,
            "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
            "baseline": {
                "path": str(self.baseline.path) if self.baseline.path else None,
                "tolerance_abs": self.baseline.tolerance_abs,
                "tolerance_rel": self.baseline.tolerance_rel,
                "metrics": list(self.baseline.metrics) if self.baseline.metrics else None,
                "allow_dataset_mismatch": self.baseline.allow_dataset_mismatch,
            },
        }


# --- parsing helpers -------------------------------------------------------------------------


def _split(value: str | list | tuple) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _items(value: Any, where: str) -> list[Any]:
    """A TOML list, a comma-separated string, or a single number, as a list."""
    if isinstance(value, str):
        return _split(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    raise ConfigError(f"{where}: expected a list, got {value!r}")


def parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def parse_levels(value: Any, where: str) -> tuple[float, ...]:
    items = _items(value, where)
    levels = []
    for item in items:
        try:
            level = float(item)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: occlusion level {item!r} is not a number") from None
        if math.isnan(level) or not 0.0 <= level < 1.0:
            raise ConfigError(f"{where}: occlusion level {level} is outside [0, 1)")
        levels.append(round(level, 6))
    if not levels:
        raise ConfigError(f"{where}: no occlusion levels given")
    # The clean baseline is always measured: retention thresholds need it.
    return tuple(sorted(set(levels) | {0.0}))


def parse_patches(value: Any, where: str) -> tuple[str, ...]:
    """Patch specifications: names with optional options, ``grid_cutout(cells=4), black_box``."""
    from .occlusion import split_patch_specs

    if not isinstance(value, (str, list, tuple)):
        raise ConfigError(f"{where}: expected a list of patch types, got {value!r}")
    patches = split_patch_specs(value) if isinstance(value, str) else [str(v).strip() for v in value]
    if not patches:
        raise ConfigError(f"{where}: no patch types given")
    return tuple(patches)


def parse_ks(value: Any, where: str) -> tuple[int, ...]:
    ks = {parse_int(item, where, 1) for item in _items(value, where)}
    if not ks:
        raise ConfigError(f"{where}: no k values given")
    return tuple(sorted(ks))


def parse_shard(value: Any, where: str) -> tuple[int, int] | None:
    if value in (None, ""):
        return None
    index, sep, count = str(value).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ConfigError(f"{where}: expected i/n such as 1/4, got {value!r}") from None
    if not sep or n < 1 or not 1 <= i <= n:
        raise ConfigError(f"{where}: expected i/n with 1 <= i <= n, got {value!r}")
    return (i, n)


def parse_int(value: Any, where: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{where}: {value!r} is not an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {number}")
    return number


def parse_device(value: Any, where: str) -> str:
    device = str(value).strip()
    if device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ConfigError(f"{where}: device must be one of auto, cpu, cuda, cuda:N; got {device!r}")


def parse_models(value: Any, where: str, defined: Mapping[str, ModelSpec] | None = None) -> tuple[ModelSpec, ...]:
    """A comma list of names, or (in TOML) a list of names and ``{name, factory, options}`` tables.

    A plain name picks a model defined by a table in an earlier source, else a registered name."""
    if isinstance(value, str):
        value = _split(value)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of model names or tables, got {value!r}")
    defined = defined or {}
    specs = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            specs.append(defined.get(item, ModelSpec(item)))
        elif isinstance(item, Mapping):
            unknown = set(item) - {"name", "factory", "options"}
            if unknown:
                raise ConfigError(f"{where}[{i}]: unknown key(s) {', '.join(sorted(unknown))}")
            if "name" not in item:
                raise ConfigError(f"{where}[{i}]: a model table needs a 'name'")
            options = item.get("options", {})
            if not isinstance(options, Mapping):
                raise ConfigError(f"{where}[{i}].options must be a table")
            specs.append(ModelSpec(str(item["name"]), item.get("factory"), dict(options)))
        else:
            raise ConfigError(f"{where}[{i}]: expected a model name or table, got {item!r}")
    if not specs:
        raise ConfigError(f"{where}: no models given")
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: model name(s) given twice: {', '.join(duplicates)}")
    return tuple(specs)


# --- sources ---------------------------------------------------------------------------------


def read_toml_table(path: Path, *, required: bool) -> dict[str, Any]:
    """``[tool.medrobust]`` of a TOML file (or its top level for a dedicated config file)."""
    if not path.is_file():
        if required:
            raise ConfigError(f"--medrobust-config: {path} does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    table = data.get("tool", {}).get("medrobust")
    if table is None:
        return {} if path.name == "pyproject.toml" else data
    return table


def resolve_dataset_spec(spec: str, base: Path) -> str:
    """A manifest path, or the path of ``loader:path``, made absolute against ``base``."""
    from .datasets import LOADERS

    loader, sep, rest = spec.partition(":")
    if sep and loader in LOADERS:
        return f"{loader}:{base / rest}" if rest else spec
    return str(base / spec)


def apply_table(settings: Settings, table: Mapping[str, Any], source: str, base: Path | None = None) -> Settings:
    """Apply one source's keys. Relative paths in it are taken against ``base`` (the folder of
    the TOML file that names them, or the invocation folder for the command line)."""
    unknown = set(table) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN_KEYS))}")
    changes: dict[str, Any] = {}

    def where(key: str) -> str:
        if source == "command line":
            return "--medrobust-" + key.replace("_", "-")
        return f"{source}: {key}"

    if "models" in table:
        models = parse_models(table["models"], where("models"), settings.model_definitions)
        changes["models"] = models
        changes["model_definitions"] = {**settings.model_definitions, **{m.name: m for m in models}}
    if "dataset" in table:
        spec = str(table["dataset"]) or None
        changes["dataset"] = resolve_dataset_spec(spec, base) if spec and base is not None else spec
    if "dataset_options" in table:
        if not isinstance(table["dataset_options"], Mapping):
            raise ConfigError(f"{where('dataset_options')} must be a table")
        changes["dataset_options"] = dict(table["dataset_options"])
    if "levels" in table:
        changes["levels"] = parse_levels(table["levels"], where("levels"))
    if "patches" in table:
        changes["patches"] = parse_patches(table["patches"], where("patches"))
    if "k" in table:
        changes["ks"] = parse_ks(table["k"], where("k"))
    if "seed" in table:
        changes["seed"] = parse_int(table["seed"], where("seed"), 0)
    if "device" in table:
        changes["device"] = parse_device(table["device"], where("device"))
    if "report_dir" in table:
        changes["report_dir"] = (base or Path()) / str(table["report_dir"])
    if "batch_size" in table:
        changes["batch_size"] = parse_int(table["batch_size"], where("batch_size"), 1)
    if "primary_metric" in table:
        changes["primary_metric"] = str(table["primary_metric"])
    if "thresholds" in table:
        changes["thresholds"] = Thresholds.from_table(table["thresholds"], where("thresholds"))
    if "search" in table:
        changes["search"] = _parse_search(settings.search, table["search"], where("search"))
    if "cache_dir" in table:
        changes["cache_dir"] = (base or Path()) / str(table["cache_dir"])
    if "cache" in table:
        changes["cache"] = parse_bool(table["cache"], where("cache"))
    if "precision" in table:
        precision = str(table["precision"])
        if precision not in PRECISIONS:
            raise ConfigError(f"{where('precision')}: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        changes["precision"] = precision
    if "shard" in table:
        changes["shard"] = parse_shard(table["shard"], where("shard"))
    if "bootstrap" in table:
        changes["bootstrap"] = _parse_bootstrap(settings.bootstrap, table["bootstrap"], where("bootstrap"))
    if "baseline" in table:
        changes["baseline"] = _parse_baseline(settings.baseline, table["baseline"], where("baseline"), base)
    return replace(settings, **changes)


def _check_table(table: Any, allowed: set[str], where: str) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(allowed))}")


def parse_fraction(value: Any, where: str, *, low: float = 0.0, high: float = 1.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if math.isnan(number) or not low <= number <= high:
        raise ConfigError(f"{where}: must be in [{low}, {high}], got {number}")
    return number


def _parse_bootstrap(current: BootstrapSettings, table: Any, where: str) -> BootstrapSettings:
    if isinstance(table, (int, str)) and not isinstance(table, bool):
        return replace(current, resamples=parse_int(table, where, 0))
    _check_table(table, {"resamples", "confidence"}, where)
    changes: dict[str, Any] = {}
    if "resamples" in table:
        changes["resamples"] = parse_int(table["resamples"], f"{where}.resamples", 0)
    if "confidence" in table:
        changes["confidence"] = parse_fraction(table["confidence"], f"{where}.confidence", low=0.5, high=0.999)
    return replace(current, **changes)


def _parse_baseline(current: BaselineSettings, table: Any, where: str, base: Path | None) -> BaselineSettings:
    keys = {"path", "save_path", "tolerance_abs", "tolerance_rel", "metrics", "allow_dataset_mismatch"}
    _check_table(table, keys, where)
    changes: dict[str, Any] = {}
    for key in ("path", "save_path"):
        if key in table:
            changes[key] = (base or Path()) / str(table[key]) if table[key] else None
    for key in ("tolerance_abs", "tolerance_rel"):
        if key in table:
            changes[key] = None if table[key] is None else parse_fraction(table[key], f"{where}.{key}", high=1e9)
    if "metrics" in table:
        changes["metrics"] = tuple(_split(table["metrics"])) or None
    if "allow_dataset_mismatch" in table:
        changes["allow_dataset_mismatch"] = parse_bool(table["allow_dataset_mismatch"], f"{where}.allow_dataset_mismatch")
    return replace(current, **changes)


def _parse_search(current: SearchSettings, table: Any, where: str) -> SearchSettings:
    _check_table(table, {"enabled", "levels", "max_examples", "profile"}, where)
    changes: dict[str, Any] = {}
    if "enabled" in table:
        changes["enabled"] = parse_bool(table["enabled"], f"{where}.enabled")
    if "levels" in table:
        changes["levels"] = tuple(x for x in parse_levels(table["levels"], f"{where}.levels") if x > 0)
    if "max_examples" in table:
        changes["max_examples"] = parse_int(table["max_examples"], f"{where}.max_examples", 1)
    if "profile" in table:
        changes["profile"] = str(table["profile"])
    return replace(current, **changes)


def build_settings(pyproject: Path, config_file: str | None, cli: Mapping[str, Any], invocation_dir: Path) -> Settings:
    """Defaults < pyproject.toml < --medrobust-config < command line (``cli`` keys as in TOML).

    Relative paths are taken against the folder of the file that names them; on the command
    line, against the folder pytest was started in."""
    settings = Settings()
    settings = apply_table(settings, read_toml_table(pyproject, required=False), str(pyproject), pyproject.parent)
    if config_file:
        path = invocation_dir / config_file
        settings = apply_table(settings, read_toml_table(path, required=True), str(config_file), path.parent)
    given = {k: v for k, v in cli.items() if v is not None}
    if given:
        settings = apply_table(settings, given, "command line", invocation_dir)
    return settings


def validate_names(settings: Settings) -> None:
    """Unknown models, patch types or metrics are usage errors, listed with the valid names.

    Checks model names without importing them (entry points and built-ins only)."""
    from .models import check_known
    from .occlusion import get_patch

    for spec in settings.models:
        check_known(spec)
    for patch in settings.patches:
        get_patch(patch)
    from .metrics import metric_names

    metric_names = metric_names(settings.ks)
    if settings.primary_metric not in metric_names:
        raise ConfigError(
            f"primary_metric {settings.primary_metric!r} is not measured with k = {list(settings.ks)} "
            f"(--medrobust-k); choose one of {', '.join(metric_names)}"
        )
    for rule in settings.thresholds.rules:
        if "*" not in rule.metric and "?" not in rule.metric and rule.metric not in metric_names:
            raise ConfigError(
                f"thresholds: {rule.metric!r} is not measured with k = {list(settings.ks)} (--medrobust-k); "
                f"measured: {', '.join(metric_names)}"
            )
    if settings.thresholds.gate == "lower" and settings.bootstrap.resamples == 0:
        raise ConfigError("thresholds.gate = 'lower' needs bootstrap intervals; --medrobust-bootstrap is 0")
    if settings.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--medrobust-device {settings.device}: CUDA is not available on this machine")


def settings_from_pytest(config: pytest.Config, cli_keys: Mapping[str, str]) -> Settings:
    """The settings of a pytest run: its options (``cli_keys`` maps option dests to table keys)
    over the config files, paths made absolute, names and the report folder checked."""
    cli = {key: config.getoption(dest) for dest, key in cli_keys.items()}
    cli["bootstrap"] = config.getoption("medrobust_bootstrap")
    dataset_cli = {
        key: config.getoption(dest)
        for dest, key in (("medrobust_limit", "limit"), ("medrobust_on_bad_rows", "on_bad_rows"))
        if config.getoption(dest) is not None
    }
    baseline = {
        key: config.getoption(dest)
        for dest, key in (
            ("medrobust_baseline", "path"),
            ("medrobust_save_baseline", "save_path"),
            ("medrobust_baseline_tolerance", "tolerance_abs"),
            ("medrobust_allow_baseline_mismatch", "allow_dataset_mismatch"),
        )
        if config.getoption(dest) is not None
    }
    cli["baseline"] = baseline or None
    inipath = config.inipath
    pyproject = inipath if inipath is not None and inipath.name == "pyproject.toml" else config.rootpath / "pyproject.toml"
    settings = build_settings(pyproject, config.getoption("medrobust_config"), cli, config.invocation_params.dir)
    if dataset_cli:
        if dataset_cli.get("limit", 1) < 1:
            raise MedrobustError(f"--medrobust-limit must be >= 1, got {dataset_cli['limit']}")
        settings = replace(settings, dataset_options={**settings.dataset_options, **dataset_cli})
    examples = config.getoption("medrobust_search_examples")
    if examples is not None:
        if examples < 0:
            raise MedrobustError(f"--medrobust-search-examples must be >= 0, got {examples}")
        settings = replace(settings, search=replace(settings.search, enabled=examples > 0, max_examples=max(1, examples)))
    if config.getoption("medrobust_no_cache"):
        settings = replace(settings, cache=False)
    home = _project_dir(config)
    if not settings.cache_dir.is_absolute():
        settings = replace(settings, cache_dir=home / settings.cache_dir)
    validate_names(settings)
    if settings.baseline.path is not None:
        from .reporting.baseline import load_baseline

        load_baseline(settings.baseline.path)  # a corrupt or wrong-schema file fails now
    if not settings.report_dir.is_absolute():
        settings = replace(settings, report_dir=home / settings.report_dir)
    if not hasattr(config, "workerinput"):
        _check_writable(settings.report_dir)
    return settings


def _project_dir(config: pytest.Config) -> Path:
    """Where the default reports/ and .medrobust_cache/ go: the folder of pytest's config file,
    else the folder pytest was started in. Not the rootdir: pytest may move it when an option's
    value is an existing path given as ``--option PATH`` (an unknown option at that stage)."""
    return config.inipath.parent if config.inipath is not None else config.invocation_params.dir


def _check_writable(directory: Path) -> None:
    """Fail before the grid runs, not after, when the reports cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".medrobust-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise MedrobustError(f"--medrobust-report-dir {directory} is not writable: {exc}") from exc
