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

from .allocator import ALLOCATORS
from .cells import level_key
from .errors import ConfigError, MedrobustError
from .gate.thresholds import Thresholds
from .models import ModelSpec
from .sharding import AutoShard, Share
from .sharding import describe as describe_share
from .sharding import plan as shard_plan

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
    "precision", "cpu_allocator", "shard", "sensitivity",
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
class SensitivitySettings:
    """Occlusion sensitivity maps (pytest_medrobust/sensitivity.py, docs/sensitivity.md): off
    unless ``images`` is set (config or ``--medrobust-sensitivity-images``)."""

    enabled: bool = False
    images: int = 8  # seeded subset of the dataset
    window: int | None = None  # pixels of the model input; None: an eighth of the shorter side
    stride: int | None = None  # None: half the window
    patch: str = "black_box"  # whose fill paints the window
    worst: int = 3  # worst-hit images drawn per model


@dataclass(frozen=True)
class Settings:
    models: tuple[ModelSpec, ...] = tuple(ModelSpec(n) for n in DEFAULT_MODELS)
    # Every model table seen in any source, so a later plain name can select a defined model.
    model_definitions: Mapping[str, ModelSpec] = field(default_factory=dict)
    dataset: str | None = None
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    # How messages name each dataset option: its flag, or "<file>: dataset_options.<key>".
    dataset_option_sources: Mapping[str, str] = field(default_factory=dict, compare=False)
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
    sensitivity: SensitivitySettings = field(default_factory=SensitivitySettings)
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    cache_dir: Path = Path(".medrobust_cache")
    cache: bool = True
    precision: str = "auto"  # auto: fp32 everywhere; bf16 / fp16 autocast are opt-in
    cpu_allocator: str = "tuned"  # allocator.py: glibc keeps a forward's activations for the next
    # The share of the grid this run measures (sharding.Share; AutoShard until build_settings
    # reads it from the engine's variables, once every source is in).
    shard: Share | AutoShard | None = None
    config_file: Path | None = None  # the --medrobust-config file read, absolute (for replays)

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
            "sensitivity": {
                "enabled": self.sensitivity.enabled, "images": self.sensitivity.images, "window": self.sensitivity.window,
                "stride": self.sensitivity.stride, "patch": self.sensitivity.patch, "worst": self.sensitivity.worst,
            },
            "cache": self.cache,
            "precision": self.precision,
            "cpu_allocator": self.cpu_allocator,
            "shard": str(self.shard) if self.shard else None,
            # Which engine's variables gave the share, and its estimated part of the grid: differs
            # between the shards of one run (merge compares everything else).
            "shard_from": describe_share(self) if isinstance(self.shard, Share) else None,
            # What the cost-balanced assignment is computed from: merge rebuilds it.
            "shard_plan": shard_plan(self) if self.shard else None,
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
        levels.append(level_key(level))
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


def parse_shard(value: Any, where: str) -> Share | AutoShard | None:
    """``I/N``, ``auto`` or ``auto/N`` (see :mod:`pytest_medrobust.sharding`)."""
    from .sharding import parse_shard as parse

    return parse(value, where)


def parse_path(value: Any, where: str) -> str:
    """A file or folder path from the config: a non-empty string (``cache_dir = 5`` is a mistake,
    not a folder named "5")."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a path, got {_shown(value)}")
    return value


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

    def checked(name: Any, at: str) -> str:
        # A model's name is part of cell ids, which name report files (masks/<cell id>.png).
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{at}: a model name must be a non-empty string, got {name!r}")
        if "/" in name or "\\" in name or ".." in name or "\0" in name:
            raise ConfigError(f"{at}: model name {name!r} must not contain '/', '\\', '..' or NUL (it names report files)")
        return name

    specs = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            specs.append(defined.get(item, ModelSpec(checked(item, f"{where}[{i}]"))))
        elif isinstance(item, Mapping):
            unknown = set(item) - {"name", "factory", "options"}
            if unknown:
                raise ConfigError(f"{where}[{i}]: unknown key(s) {', '.join(sorted(unknown))}")
            if "name" not in item:
                raise ConfigError(f"{where}[{i}]: a model table needs a 'name'")
            options = item.get("options", {})
            if not isinstance(options, Mapping):
                raise ConfigError(f"{where}[{i}].options must be a table")
            specs.append(ModelSpec(checked(item["name"], f"{where}[{i}].name"), item.get("factory"), dict(options)))
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
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{path}: 'tool' must be a table ([tool.medrobust]), got {_shown(tool)}")
    table = tool.get("medrobust")
    if table is None:
        return {} if path.name == "pyproject.toml" else data
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.medrobust] must be a table, got medrobust = {_shown(table)}")
    return table


def _shown(value: Any) -> str:
    """A value as a message shows it: repr and TOML type, cut short."""
    text = repr(value)
    return f"{text[:80]}{'...' if len(text) > 80 else ''} ({type(value).__name__})"


def resolve_dataset_spec(spec: str, base: Path, where: str = "dataset") -> str:
    """A manifest path, or the path of ``loader:path``, made absolute against ``base``.

    ``name:...`` with a name that is no loader is an error listing the loaders (a single letter
    is a Windows drive, and a name with a slash is a path)."""
    from .datasets import LOADERS, available_loaders

    loader, sep, rest = spec.partition(":")
    if sep and loader in LOADERS:
        return f"{loader}:{base / rest}" if rest else spec
    if sep and len(loader) > 1 and "/" not in loader and "\\" not in loader and not (base / spec).exists():
        raise ConfigError(
            f"{where}: unknown dataset loader {loader!r} in {spec!r}; known loaders: {', '.join(available_loaders())} "
            "(or give a manifest path)"
        )
    return str(base / spec)


# Options every loader takes (datasets.subset.build_dataset); each loader adds its own.
COMMON_DATASET_OPTIONS = ("limit", "seed", "on_bad_rows", "validate", "cache_dir", "workers", "regions", "regions_format")
# The type each known loader option must have; a loader option not listed is passed as given.
_DATASET_OPTION_TYPES = {
    "seed": "int", "workers": "count", "cache_dir": "folder", "validate": "str", "split": "str", "section": "str",
    "one_image_per_study": "bool", "name": "str", "reports_dir": "path", "images_dir": "path", "csv": "path",
    "split_file": "path", "metadata_file": "path", "views": "names", "image_root": "folder",
    "regions": "folder", "regions_format": "str",  # a regions file, taken against the config's folder
}


def loader_options(loader: str) -> list[str]:
    """The options a dataset loader accepts: the common ones and its own keyword parameters."""
    import importlib
    import inspect

    from .datasets import LOADERS

    target = "manifest" if loader == "phantom" else loader  # the phantom is a manifest with a fixed name
    module_name, _, attr = LOADERS[target].partition(":")
    function = getattr(importlib.import_module(module_name), attr)
    own = list(inspect.signature(function).parameters.values())[1:]  # the first is the dataset path
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in own if p.kind in keyword} | set(COMMON_DATASET_OPTIONS)
    if loader == "phantom":
        names.discard("name")
    return sorted(names)


def _check_dataset_options(settings: Settings) -> None:
    """Every dataset option is one the configured loader takes: a typo (``limt``) would
    otherwise reach the loader as an unexpected keyword, or be ignored."""
    from difflib import get_close_matches

    from .datasets import parse_spec

    loader, _ = parse_spec(settings.dataset)
    known = loader_options(loader)
    for key in settings.dataset_options:
        if key not in known:
            where = settings.dataset_option_sources.get(key, f"dataset_options.{key}")
            close = get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{where}: unknown option {key!r} for the {loader!r} dataset loader; {hint}it takes: {', '.join(known)}"
            )


def _typed_option(value: Any, kind: str, name: str, base: Path | None) -> Any:
    """A loader option of a known type, checked; a ``folder`` (the cache, the image root) made
    absolute against ``base`` (the loaders' own paths are passed as given)."""
    if kind == "int":
        return parse_int(value, name)
    if kind == "count":
        return parse_int(value, name, 1)
    if kind == "bool":
        return parse_bool(value, name)
    if kind == "names" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    if not isinstance(value, str) or (kind != "str" and not value.strip()):
        expected = {"path": "a path", "folder": "a path", "names": "a list of names or a comma-separated string"}
        raise ConfigError(f"{name}: expected {expected.get(kind, 'a string')}, got {_shown(value)}")
    return str((base or Path()) / value) if kind == "folder" else value


def _parse_dataset_options(table: Any, where: str, base: Path | None) -> dict[str, Any]:
    """Loader options pass through to the loader, the known ones checked by type here (the
    names against the loader's in :func:`validate_names`, once the dataset is known)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table, got {_shown(table)}")
    options = dict(table)

    def name(key: str) -> str:
        return _sub(where, "dataset_options", key)

    for key, kind in _DATASET_OPTION_TYPES.items():
        if key in options:
            options[key] = _typed_option(options[key], kind, name(key), base)
    if "validate" in options and options["validate"] not in ("decode", "exists"):
        raise ConfigError(f"{name('validate')}: must be decode or exists, got {options['validate']!r}")

    if "limit" in options:
        options["limit"] = parse_int(options["limit"], name("limit"), 1)
    if "on_bad_rows" in options and options["on_bad_rows"] not in ("error", "drop"):
        raise ConfigError(f"{name('on_bad_rows')}: must be error or drop, got {options['on_bad_rows']!r}")
    return options


def apply_table(settings: Settings, table: Mapping[str, Any], source: str, base: Path | None = None) -> Settings:
    """Apply one source's keys. Relative paths in it are taken against ``base`` (the folder of
    the TOML file that names them, or the invocation folder for the command line)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: the medrobust settings must be a table, got {_shown(table)}")
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
        spec = table["dataset"]
        if not isinstance(spec, str) or not spec.strip():
            # An unset $DATA in a CI script must not quietly gate the bundled demo data.
            raise ConfigError(
                f"{where('dataset')}: the dataset is empty ({spec!r}); give a manifest path or loader:path, "
                "or leave the option out entirely to run the bundled demo dataset"
            )
        changes["dataset"] = resolve_dataset_spec(spec.strip(), base or Path(), where("dataset"))
    if "dataset_options" in table:
        options = _parse_dataset_options(table["dataset_options"], where("dataset_options"), base)
        changes["dataset_options"] = {**settings.dataset_options, **options}
        names = {k: _sub(where("dataset_options"), "dataset_options", k) for k in options}
        changes["dataset_option_sources"] = {**settings.dataset_option_sources, **names}
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
        changes["report_dir"] = (base or Path()) / parse_path(table["report_dir"], where("report_dir"))
    if "batch_size" in table:
        changes["batch_size"] = parse_int(table["batch_size"], where("batch_size"), 1)
    if "primary_metric" in table:
        changes["primary_metric"] = str(table["primary_metric"])
    if "thresholds" in table:
        changes["thresholds"] = Thresholds.from_table(table["thresholds"], where("thresholds"))
    if "search" in table:
        changes["search"] = _parse_search(settings.search, table["search"], where("search"))
    if "cache_dir" in table:
        changes["cache_dir"] = (base or Path()) / parse_path(table["cache_dir"], where("cache_dir"))
    if "cache" in table:
        changes["cache"] = parse_bool(table["cache"], where("cache"))
    if "precision" in table:
        precision = str(table["precision"])
        if precision not in PRECISIONS:
            raise ConfigError(f"{where('precision')}: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        changes["precision"] = precision
    if "cpu_allocator" in table:
        allocator = table["cpu_allocator"]
        if allocator not in ALLOCATORS:
            raise ConfigError(f"{where('cpu_allocator')}: must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
        changes["cpu_allocator"] = allocator
    if "shard" in table:
        changes["shard"] = parse_shard(table["shard"], where("shard"))
    if "sensitivity" in table:
        changes["sensitivity"] = _parse_sensitivity(settings.sensitivity, table["sensitivity"], where("sensitivity"))
    if "bootstrap" in table:
        changes["bootstrap"] = _parse_bootstrap(settings.bootstrap, table["bootstrap"], where("bootstrap"))
    if "baseline" in table:
        changes["baseline"] = _parse_baseline(settings.baseline, table["baseline"], where("baseline"), base)
    return replace(settings, **changes)


def _sub(where: str, section: str, key: str) -> str:
    """How a message names ``section.key``: its flag on the command line, else ``where.key``."""
    if where.startswith("--"):
        from .options import settings_keys

        return settings_keys().get(f"{section}.{key}", f"{where}.{key}")
    return f"{where}.{key}"


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
        changes["resamples"] = parse_int(table["resamples"], _sub(where, "bootstrap", "resamples"), 0)
    if "confidence" in table:
        changes["confidence"] = parse_fraction(table["confidence"], f"{where}.confidence", low=0.5, high=0.999)
    return replace(current, **changes)


def _parse_baseline(current: BaselineSettings, table: Any, where: str, base: Path | None) -> BaselineSettings:
    keys = {"path", "save_path", "tolerance_abs", "tolerance_rel", "metrics", "allow_dataset_mismatch"}
    _check_table(table, keys, where)
    changes: dict[str, Any] = {}
    for key in ("path", "save_path"):
        if key in table:
            given = table[key]
            name = _sub(where, "baseline", key)
            if key == "path" and isinstance(given, str) and not given.strip():
                # An unset $BASELINE in a CI script must not switch the baseline check off.
                raise ConfigError(f"{name}: the baseline path is empty; leave the option out to run without a baseline")
            changes[key] = (base or Path()) / parse_path(given, name) if given != "" else None
    for key in ("tolerance_abs", "tolerance_rel"):
        if key in table:
            changes[key] = None if table[key] is None else parse_fraction(table[key], _sub(where, "baseline", key), high=1e9)
    if "metrics" in table:
        changes["metrics"] = tuple(_split(table["metrics"])) or None
    if "allow_dataset_mismatch" in table:
        changes["allow_dataset_mismatch"] = parse_bool(
            table["allow_dataset_mismatch"], _sub(where, "baseline", "allow_dataset_mismatch")
        )
    return replace(current, **changes)


def _parse_search(current: SearchSettings, table: Any, where: str) -> SearchSettings:
    _check_table(table, {"enabled", "levels", "max_examples", "profile"}, where)
    changes: dict[str, Any] = {}
    if "enabled" in table:
        changes["enabled"] = parse_bool(table["enabled"], f"{where}.enabled")
    if "levels" in table:
        changes["levels"] = tuple(x for x in parse_levels(table["levels"], f"{where}.levels") if x > 0)
    if "max_examples" in table:
        # 0 is how the search is turned off (as --medrobust-search-examples 0).
        examples = parse_int(table["max_examples"], _sub(where, "search", "max_examples"), 0)
        changes["max_examples"] = max(1, examples)
        if "enabled" not in table:  # a count switches the search on, 0 off; an explicit enabled wins
            changes["enabled"] = examples > 0
    if "profile" in table:
        from .strategies import CI_PROFILE, EXPLORE_PROFILE

        profiles = (CI_PROFILE, EXPLORE_PROFILE)
        if table["profile"] not in profiles:
            raise ConfigError(f"{where}.profile: must be one of {', '.join(profiles)}, got {_shown(table['profile'])}")
        changes["profile"] = table["profile"]
    return replace(current, **changes)


def _parse_sensitivity(current: SensitivitySettings, table: Any, where: str) -> SensitivitySettings:
    _check_table(table, {"enabled", "images", "window", "stride", "patch", "worst"}, where)
    changes: dict[str, Any] = {}
    if "images" in table:
        # As the search's max_examples: a count switches the step on, 0 off; an explicit enabled wins.
        images = parse_int(table["images"], _sub(where, "sensitivity", "images"), 0)
        changes["images"] = max(1, images)
        if "enabled" not in table:
            changes["enabled"] = images > 0
    if "enabled" in table:
        changes["enabled"] = parse_bool(table["enabled"], f"{where}.enabled")
    for key in ("window", "stride"):
        if key in table:
            changes[key] = parse_int(table[key], _sub(where, "sensitivity", key), 1)
    if "worst" in table:
        changes["worst"] = parse_int(table["worst"], f"{where}.worst", 0)
    if "patch" in table:
        from .occlusion import make_patch

        try:
            make_patch(str(table["patch"]))
        except MedrobustError as exc:
            raise ConfigError(f"{where}.patch: {exc}") from None
        changes["patch"] = str(table["patch"])
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
        settings = replace(settings, config_file=path.resolve())
    if cli:
        settings = apply_table(settings, cli, "command line", invocation_dir)
    if isinstance(settings.shard, AutoShard):
        settings = replace(settings, shard=settings.shard.resolve())
    return settings


def validate_names(settings: Settings) -> None:
    """Unknown models, patch types or metrics are usage errors, listed with the valid names.

    Checks model names without importing them (entry points and built-ins only)."""
    from .models import check_known
    from .occlusion import get_patch

    for spec in settings.models:
        check_known(spec, settings.model_definitions)
    for patch in settings.patches:
        get_patch(patch)
    from .metrics import metric_names as measured_metrics

    metric_names = measured_metrics(settings.ks)
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
    _check_rules_match(settings)
    _check_dataset_options(settings)
    if settings.thresholds.gate == "lower" and settings.bootstrap.resamples == 0:
        raise ConfigError("thresholds.gate = 'lower' needs bootstrap intervals; --medrobust-bootstrap is 0")
    if settings.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--medrobust-device {settings.device}: CUDA is not available on this machine")


def _check_rules_match(settings: Settings) -> None:
    """A rule whose model or patch pattern matches nothing of this run is a typo that would
    silently drop a limit (``model = "demo-plian"``): an error, naming the rule's pattern."""
    from fnmatch import fnmatchcase

    from .metrics import metric_names

    models, patches, metrics = settings.model_names, list(settings.patches), metric_names(settings.ks)
    levels = set(settings.levels) | set(settings.search.levels or ())
    for rule in settings.thresholds.rules:
        for field_name, pattern, names in (
            ("model", rule.model, models), ("patch", rule.patch, patches), ("metric", rule.metric, metrics)
        ):
            if not any(fnmatchcase(n, pattern) for n in names):
                raise ConfigError(
                    f"thresholds: a rule for {rule.metric!r} has {field_name} = {pattern!r}, which matches no "
                    f"{field_name} of this run ({', '.join(names)})"
                )
        if rule.cells == "search" and not settings.search.enabled:
            raise ConfigError(f"thresholds: a rule for {rule.metric!r} has cells = \"search\", but the search is off")
        if not any(rule.matches(rule.model, rule.patch, level, rule.metric, rule.cells) for level in levels):
            # fnmatch patterns match themselves, so only the level conditions are tested here.
            raise ConfigError(
                f"thresholds: a rule for {rule.metric!r} limits levels (levels = {list(rule.levels or [])}, "
                f"max_level = {rule.max_level}) that this run does not measure ({', '.join(map(str, sorted(levels)))})"
            )
    reference = settings.thresholds.reference
    if reference is not None and reference["model"] not in models:
        raise ConfigError(
            f"thresholds.reference: model {reference['model']!r} is not a model of this run ({', '.join(models)})"
        )
    # The reference test is a paired bootstrap of a recall's per-query hits.
    if reference is not None and settings.bootstrap.resamples == 0:
        raise ConfigError("thresholds.reference needs bootstrap resamples; --medrobust-bootstrap is 0")
    if reference is not None and "_R@" not in settings.primary_metric:
        raise ConfigError(
            f"thresholds.reference compares a recall per query; primary_metric {settings.primary_metric!r} is a rank"
        )


def settings_from_pytest(config: pytest.Config) -> Settings:
    """The settings of a pytest run: its options (see options.py) over the config files, paths
    made absolute, names and the report folder checked."""
    from .options import command_line_table

    inipath = config.inipath
    pyproject = inipath if inipath is not None and inipath.name == "pyproject.toml" else config.rootpath / "pyproject.toml"
    settings = build_settings(
        pyproject, config.getoption("medrobust_config"), command_line_table(config), config.invocation_params.dir
    )
    home = _project_dir(config)
    if not settings.cache_dir.is_absolute():
        settings = replace(settings, cache_dir=home / settings.cache_dir)
    validate_names(settings)
    if settings.baseline.path is not None:
        from .gate import load_baseline

        load_baseline(settings.baseline.path)  # a corrupt or wrong-schema file fails now
    if not settings.report_dir.is_absolute():
        settings = replace(settings, report_dir=home / settings.report_dir)
    if not hasattr(config, "workerinput"):
        _check_writable(settings.report_dir)
        if settings.cache:
            _check_folder(settings.cache_dir, "cache_dir (--medrobust-cache-dir)")
        if settings.baseline.save_path is not None:
            _check_file_target(settings.baseline.save_path, "baseline.save_path (--medrobust-save-baseline)")
    return settings


def _nearest_existing(path: Path) -> Path:
    """``path`` itself, or its nearest ancestor that exists."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _check_folder(path: Path, name: str) -> None:
    """``path`` is, or can be made, a folder: neither it nor an ancestor is a file."""
    found = _nearest_existing(path)
    if not found.is_dir():
        what = f"{path} is a file" if found == path else f"{found}, on the path {path}, is a file"
        raise ConfigError(f"{name}: {what}, not a folder")


def _check_file_target(path: Path, name: str) -> None:
    """A file can be written at ``path`` (checked before the grid runs, not after it)."""
    if path.is_dir():
        raise ConfigError(f"{name}: {path} is a folder; give a file path, such as {path / 'baseline.json'}")
    _check_folder(path.parent, name)
    found = _nearest_existing(path.parent)
    if not os.access(found, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}: cannot write {path}: {found} is not writable")


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
