"""Content-addressed on-disk cache of embeddings (``.medrobust_cache/`` by default).

An entry is keyed by everything its numbers depend on: the model fingerprint (weights hash, the
source of the model's code, and preprocessing: :func:`model_fingerprint`), the dataset
fingerprint (ids, reports, image bytes), what was encoded (the report texts, or the images under
one occlusion: patch spec, level, seed or placement policy) and the inference settings (dtype,
batch size). Change any of them and the key changes, so a stale entry is never read.

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a killed run
leaves at most an orphaned temporary file, never a corrupt entry. Several xdist workers may
share one cache: an exclusive file lock per key makes the first worker compute an entry while
the others wait and then read it. Every entry carries a sha256 of its key and its tensor; an
entry that cannot be read, sits under another key, or fails that checksum (damaged by hand, disk
error, data swapped between entries) is corrupt: it is counted, recomputed and overwritten.

The cache folder carries a marker file (:data:`MARKER`) written when this plugin creates it;
``--medrobust-cache-clear`` empties only a folder that carries it (:func:`check_clearable`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import MedrobustError
from .files import atomic_write

# Bump when the meaning of a cached embedding changes (how images are decoded, occluded, batched).
# 2: entries carry a checksum (entries of 1 have none, and would all read as corrupt).
CACHE_VERSION = 2

# The Cache Directory Tagging Standard's file (backup tools skip the folder), with our name in it:
# the proof that a folder is one this plugin created, and so one it may empty.
MARKER = "CACHEDIR.TAG"
MARKER_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This folder is a cache created by pytest-medrobust (embeddings, decoded images, file hashes).\n"
    "# pytest --medrobust-cache-clear empties it; it empties no folder without this file.\n"
)

try:  # POSIX only; elsewhere workers may compute the same entry twice, which is still correct.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def cache_key(fields: Mapping[str, Any]) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def entry_checksum(key: str, value: torch.Tensor) -> str:
    """sha256 binding an entry's tensor (dtype, shape, bytes) to its key: data copied from
    another entry, or changed on disk, no longer matches."""
    t = value.detach().cpu().contiguous()
    h = hashlib.sha256(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class EmbeddingCache:
    """``get_or_compute(fields, compute)`` returns the cached tensor or computes and stores it."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self.last_hit = False  # whether the last get_or_compute read the cache
        self.last_corrupt: str | None = None  # why the last get_or_compute's entry was corrupt
        self.corrupt = 0  # corrupt entries found (and recomputed) by this cache object

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / "embeddings" / key[:2] / f"{key}.safetensors"

    def get_or_compute(self, fields: Mapping[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        self.last_hit = False
        self.last_corrupt = None
        if self.root is None:
            return compute()
        key = cache_key(fields)
        path = self.path(key)
        found, why = self._read(path, key)
        if found is None:
            with self._lock(path):
                found, again = self._read(path, key)  # another worker may have written it meanwhile
                if found is None:
                    why = why or again
                    if why is not None:
                        self.last_corrupt = f"{path}: {why}"
                        self.corrupt += 1
                    value = compute()
                    self._write(path, key, value, fields)
                    return value
        self.last_hit = True
        return found

    def _read(self, path: Path, key: str) -> tuple[torch.Tensor | None, str | None]:
        """(the entry's tensor, None), (None, None) when there is no entry, or (None, why) when
        the entry is corrupt."""
        if not path.is_file():
            return None, None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                value = f.get_tensor("embeddings")
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is corrupt: recompute it
            return None, f"unreadable ({type(exc).__name__}: {exc})"
        if metadata.get("key") != key:
            return None, "the entry of another key"
        if metadata.get("sha256") != entry_checksum(key, value):
            return None, "checksum mismatch"
        # A copy in memory of our own: a tensor read from the file may sit at an offset that makes
        # BLAS take another kernel, and round ties differently from a freshly computed one.
        return value.clone(), None

    def _write(self, path: Path, key: str, value: torch.Tensor, fields: Mapping[str, Any]) -> None:
        from safetensors.torch import save

        stored = value.detach().float().cpu().contiguous()
        metadata = {
            "key": key,
            "sha256": entry_checksum(key, stored),
            "fields": json.dumps(fields, sort_keys=True, default=str),
        }
        atomic_write(path, save({"embeddings": stored}, metadata=metadata))

    @contextlib.contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def clear(self) -> None:
        """Remove the entries this cache wrote (never anything else under its folder)."""
        if self.root is not None:
            shutil.rmtree(self.root / "embeddings", ignore_errors=True)


def is_marked(root: Path) -> bool:
    """Whether ``root`` carries our marker (so this plugin created it)."""
    try:
        return "pytest-medrobust" in (root / MARKER).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def claim_cache_dir(root: Path) -> None:
    """Create the cache folder with our marker (or mark it while it is empty, as after a run
    killed between the two). A folder that already holds files and no marker is used as it is,
    but never cleared: it may be the user's."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not is_marked(root) and not any(root.iterdir()):
            atomic_write(root / MARKER, MARKER_TEXT)
    except OSError as exc:
        raise MedrobustError(f"medrobust cache folder {root} (--medrobust-cache-dir): cannot create it: {exc}") from exc


def check_clearable(root: Path) -> bool:
    """Whether ``root`` holds a cache to clear (False: missing or empty, nothing to do). Raises
    :class:`MedrobustError` for a folder without our marker: it may be the user's own."""
    try:
        if not root.exists():
            return False
        if not root.is_dir():
            raise MedrobustError(f"--medrobust-cache-clear: the cache folder {root} is not a folder")
        if is_marked(root):
            return True
        if not any(root.iterdir()):
            return False
    except OSError as exc:
        raise MedrobustError(f"--medrobust-cache-clear: cannot read the cache folder {root}: {exc}") from exc
    raise MedrobustError(
        f"--medrobust-cache-clear: refusing to clear {root}: it has no {MARKER} file of pytest-medrobust, so it "
        "is not a cache folder this plugin created and may hold your files (a cache made before the marker "
        "existed has none either: delete it yourself, or point --medrobust-cache-dir at a new folder)"
    )


def _hash_tensors(items: Iterable[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(items, key=lambda item: item[0]):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def tensor_fingerprint(module: Any) -> str | None:
    """sha256 over a torch module's parameters and buffers (names, dtypes, shapes, bytes)."""
    state = getattr(module, "state_dict", None)
    if not callable(state):
        return None
    return _hash_tensors(state().items())


def _attribute_tensors(model: Any) -> dict[str, torch.Tensor]:
    """The arrays a plain (non-Module) model holds in its attributes: torch modules' state dicts,
    bare tensors and numeric numpy arrays, directly or in a list, tuple or dict, keyed by where
    they sit."""
    import numpy as np

    out: dict[str, torch.Tensor] = {}

    def add(where: str, value: Any) -> None:
        if isinstance(value, torch.nn.Module):
            out.update({f"{where}.{k}": v for k, v in value.state_dict().items()})
        elif isinstance(value, torch.Tensor):
            out[where] = value
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            out[where] = torch.from_numpy(np.ascontiguousarray(value))

    for attr, value in sorted(getattr(model, "__dict__", {}).items()):
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                add(f"{attr}[{i}]", item)
        elif isinstance(value, dict):
            for key, item in value.items():
                add(f"{attr}[{key!r}]", item)
        else:
            add(attr, value)
    return out


def _option_files(card: Mapping[str, Any]) -> dict[str, str]:
    """sha256 of every file an option names (weights a plain class reads into something that is
    not a tensor: an ONNX session, a pickle-free binary format)."""
    from .models.hub import sha256_file

    out: dict[str, str] = {}
    options = card.get("options")
    for key, value in sorted(options.items()) if isinstance(options, Mapping) else []:
        if isinstance(value, str) and value and len(value) < 4096:
            path = Path(value).expanduser()
            try:
                if path.is_file():
                    out[key] = sha256_file(path)
            except OSError:
                continue
    return out


def _weights_fingerprint(model: Any, card: Mapping[str, Any]) -> str:
    """The weights file's sha256 from the card; else a hash of the model's tensors (its
    ``state_dict``, or for a plain class the arrays in its attributes and the files its options
    name). A model without any has only its code and options to go by, which is all its
    embeddings then depend on."""
    if card.get("sha256"):
        return str(card["sha256"])
    found = tensor_fingerprint(model)
    if found is not None:
        return found
    tensors = _hash_tensors(_attribute_tensors(model).items())
    return cache_key({"tensors": tensors, "option_files": _option_files(card)})


# Packages whose code is versioned in the key by other means (pytest_medrobust.__version__ and
# torch.__version__ are key fields), or that are no model's code.
_VERSIONED = ("builtins", "torch", "pytest_medrobust")


def _top(name: str) -> str:
    return name.partition(".")[0]


def _code_modules(model: Any, card: Mapping[str, Any]) -> list[str]:
    """Modules whose code shapes the embeddings: those of the model's classes (with their bases
    and the torch modules it holds) and of its factory; torch's own (versioned in the key) and
    builtins left out."""
    classes: list[type] = list(type(model).__mro__)
    held = [model] if isinstance(model, torch.nn.Module) else []
    held += [v for v in getattr(model, "__dict__", {}).values() if isinstance(v, torch.nn.Module)]
    for module in held:
        for sub in module.modules():
            classes.extend(type(sub).__mro__)
    names = {c.__module__ for c in classes}
    factory = _factory_module(card)
    if factory:
        names.add(factory)
    return sorted(n for n in names if n and n != "builtins" and n != "torch" and not n.startswith("torch."))


def _factory_module(card: Mapping[str, Any]) -> str | None:
    factory = card.get("factory")
    return factory.partition(":")[0] if isinstance(factory, str) and ":" in factory else None


def _package_modules(model: Any, card: Mapping[str, Any]) -> list[str]:
    """The loaded modules of the user's own package (that of the model's class or its factory,
    unless it is ours): a preprocessing constant may sit in a sibling of the model's module."""
    own = {type(model).__module__, _factory_module(card) or ""}
    packages = {_top(n) for n in own if "." in n and _top(n) not in _VERSIONED}
    return sorted(n for n in list(sys.modules) if _top(n) in packages)


def _module_code(name: str) -> str | None:
    """sha256 of a module's source file as it is on disk now (read directly: linecache may hold
    an older copy), else of its source through its loader; None when neither can be read."""
    module = sys.modules.get(name)
    if module is None:
        return None
    try:
        source = inspect.getsourcefile(module)
    except TypeError:  # a built-in module
        source = None
    if source:
        try:
            return hashlib.sha256(Path(source).read_bytes()).hexdigest()
        except OSError:
            pass
    try:
        return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()
    except (OSError, TypeError):
        pass
    file = getattr(module, "__file__", None)
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest() if file else None
    except OSError:
        return None


def _code_fingerprint(model: Any, card: Mapping[str, Any]) -> dict[str, str] | None:
    code = {name: _module_code(name) for name in _code_modules(model, card)}
    if not code or any(v is None for v in code.values()):
        return None
    # A package's other modules count when they can be read (a namespace package has no file).
    extra = {name: _module_code(name) for name in _package_modules(model, card) if name not in code}
    return {**{k: v for k, v in code.items() if v is not None}, **{k: v for k, v in extra.items() if v is not None}}


def _card_fields(card: Mapping[str, Any]) -> dict[str, Any]:
    """The card without what does not change the embeddings (training notes, counts)."""
    return {k: v for k, v in card.items() if k not in ("training", "n_parameters")}


def model_fingerprint(model: Any, card: Mapping[str, Any]) -> str | None:
    """What a model's embeddings depend on, as one key; None when it cannot be known (then its
    embeddings are not cached: see :func:`missing_fingerprint`).

    A model's own ``fingerprint()`` (a string that changes whenever its embeddings would) wins.
    Otherwise: the weights (the card's ``sha256`` of the weights file, else a hash of the
    model's tensors: its ``state_dict``, or the torch modules, tensors and arrays a plain class
    holds in its attributes plus the files its options name), the source of the modules its
    classes and its factory are defined in (and of the other loaded modules of the user's package
    around them), and the card (options, preprocessing). None only
    when that source cannot be read (a class made at run time, a module without a file).
    """
    own = getattr(model, "fingerprint", None)
    if callable(own):
        value = own()
        return None if value is None else cache_key({"fingerprint": str(value), "card": _card_fields(card)})
    code = _code_fingerprint(model, card)
    if code is None:
        return None
    weights = _weights_fingerprint(model, card)
    return cache_key({"weights": weights, "code": code, "card": _card_fields(card)})


def missing_fingerprint(model: Any, card: Mapping[str, Any]) -> str:
    """Why :func:`model_fingerprint` found none, and how the model can supply one."""
    name = card.get("name") or getattr(model, "name", type(model).__name__)
    how = (
        "define fingerprint() on the model, returning a string that changes whenever its embeddings would "
        "(e.g. the sha256 of its weights file and a version of its code)"
    )
    if callable(getattr(model, "fingerprint", None)):
        return f"model {name!r}: its embeddings are not cached: its fingerprint() returned None; {how}"
    unreadable = [n for n in _code_modules(model, card) if _module_code(n) is None]
    why = f"the code of {', '.join(unreadable) or type(model).__qualname__} cannot be read to fingerprint it"
    return f"model {name!r}: its embeddings are not cached: {why}; {how}"


class CacheWarning(UserWarning):
    """Something about the embedding cache the user should know (e.g. a model left uncached)."""
