"""Models under test: the protocol they follow and the registry that builds them by name.

A model is any object with::

    name: str
    input_size: tuple[int, int]          # (H, W) the images are resized to
    geometry: "crop" | "pad"             # how a non-square image reaches input_size
    encode_images(x) -> Tensor (B, D)    # x: float B x 3 x H x W in [0, 1], already occluded
    encode_texts(texts: list[str]) -> Tensor (B, D)

and optionally ``card() -> dict`` (fields for the results JSON: source, weights sha256, ...) and
``fingerprint() -> str`` (what its embeddings depend on, for the cache; see
:func:`pytest_medrobust.cache.model_fingerprint`).
The model does its own normalisation and tokenisation.

Factories are called as ``factory(device=torch.device, **options)``. They are found, in order:
a ``"package.module:function"`` path given in the config, the entry point group
``pytest_medrobust.models`` (name -> factory), and the built-in names below. Importing this
module does not import torch.
"""

from __future__ import annotations

import importlib
import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..errors import ModelLoadError

if TYPE_CHECKING:
    import torch

ENTRY_POINT_GROUP = "pytest_medrobust.models"

# Built-in factories by name; imported only when used so optional heavy packages stay unloaded.
BUILTIN_FACTORIES: dict[str, str] = {
    "demo-plain": "pytest_medrobust.models.demo:demo_plain",
    "demo-occaug": "pytest_medrobust.models.demo:demo_occaug",
    "clip": "pytest_medrobust.models.clip:load_clip",
    "cxr-repair": "pytest_medrobust.models.cxr_repair:load_cxr_repair",
    "medclip": "pytest_medrobust.models.medclip:load_medclip",
    "cxr-clip": "pytest_medrobust.models.cxr_clip:load_cxr_clip",
}


@runtime_checkable
class RetrievalModel(Protocol):
    name: str
    input_size: tuple[int, int]
    geometry: Literal["crop", "pad"]

    def encode_images(self, x: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...


@dataclass(frozen=True)
class ModelSpec:
    """A model as the user asked for it: a registered name, or a name plus a factory path."""

    name: str
    factory: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def _entry_point_factories() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_models() -> list[str]:
    return sorted({**BUILTIN_FACTORIES, **_entry_point_factories()})


def check_known(spec: ModelSpec, defined: Iterable[str] = ()) -> None:
    """Fail early, without importing anything heavy, when a name cannot be resolved.

    ``defined``: the names of the models the configuration defines (tables with a factory), so
    the error lists them with the registered ones."""
    if spec.factory is None and spec.name not in BUILTIN_FACTORIES and spec.name not in _entry_point_factories():
        registered = available_models()
        own = sorted({str(n) for n in defined} - set(registered))
        listed = f"registered: {', '.join(registered)}" + (f"; defined in the config: {', '.join(own)}" if own else "")
        raise ModelLoadError(
            f"unknown model {spec.name!r}; {listed} (or define it in the config with a factory as "
            "'package.module:function')"
        )
    if spec.factory is not None and ":" not in spec.factory:
        raise ModelLoadError(f"model {spec.name!r}: factory {spec.factory!r} must look like 'package.module:function'")


def resolve_factory(spec: ModelSpec) -> Callable[..., RetrievalModel]:
    check_known(spec)
    path = spec.factory or _entry_point_factories().get(spec.name) or BUILTIN_FACTORIES[spec.name]
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"model {spec.name!r}: cannot import factory {path!r}: {exc}") from exc
    if not callable(obj):
        raise ModelLoadError(f"model {spec.name!r}: factory {path!r} is not callable")
    return obj


def _parameters(factory: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def load_model(spec: ModelSpec, device: torch.device) -> RetrievalModel:
    """Build a model and check that it follows the protocol; errors name the model."""
    factory = resolve_factory(spec)
    options = dict(spec.options)
    # Adapters that take a `name` use it in their messages and cards: give them the user's.
    if "name" not in options and "name" in _parameters(factory):
        options["name"] = spec.name
    try:
        model = factory(device=device, **options)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"model {spec.name!r} failed to load: {type(exc).__name__}: {exc}") from exc
    missing = [a for a in ("input_size", "geometry", "encode_images", "encode_texts") if not hasattr(model, a)]
    if missing:
        raise ModelLoadError(f"model {spec.name!r}: the factory's object lacks {', '.join(missing)}")
    if model.geometry not in ("crop", "pad"):
        raise ModelLoadError(f"model {spec.name!r}: geometry must be 'crop' or 'pad', got {model.geometry!r}")
    check_input_size(spec.name, model.input_size)
    for method in ("encode_images", "encode_texts"):
        if not callable(getattr(model, method)):
            raise ModelLoadError(f"model {spec.name!r}: {method} is not callable")
    return model


# Larger than any chest X-ray detector: a bigger input_size is a mistake (units, a swapped field).
MAX_INPUT_SIDE = 16384


def check_input_size(name: str, size: Any) -> None:
    """``input_size`` must be (height, width), two positive ints: the images are decoded to it,
    so a bad one would otherwise surface as a decoding error blamed on the dataset."""
    ok = (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 < int(v) <= MAX_INPUT_SIDE for v in size)
    )
    if not ok:
        raise ModelLoadError(
            f"model {name!r}: input_size must be (height, width), two integers from 1 to {MAX_INPUT_SIDE}; "
            f"got {size!r} ({type(size).__name__})"
        )


def _shown_option(key: str, value: Any) -> Any:
    """Options as the results JSON shows them: secrets (tokens, keys, passwords) redacted."""
    if any(word in key.lower() for word in ("token", "secret", "password", "api_key", "apikey")):
        return "***"
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


def model_card(model: RetrievalModel, spec: ModelSpec) -> dict[str, Any]:
    """What the results JSON says about a model; adapters add fields through ``card()``."""
    card: dict[str, Any] = {
        "name": spec.name,
        "factory": spec.factory or BUILTIN_FACTORIES.get(spec.name) or _entry_point_factories().get(spec.name),
        "options": {k: _shown_option(k, v) for k, v in spec.options.items()},
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "input_size": list(model.input_size),
        "geometry": model.geometry,
    }
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        card["n_parameters"] = int(sum(p.numel() for p in parameters()))
    extra = getattr(model, "card", None)
    if callable(extra):
        card.update(extra())
    return card
