"""Content-addressed on-disk cache of embeddings (``.medrobust_cache/`` by default).

An entry is keyed by everything its numbers depend on: the model fingerprint (weights hash, the
source of the model's code, and preprocessing: :func:`model_fingerprint`), the dataset
fingerprint (ids, reports, image bytes), what was encoded (the report texts, or the images under
one occlusion: patch spec, level, seed or placement policy) and the inference settings (dtype,
batch size). Change any of them and the key changes, so a stale entry is never read.

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a killed run
leaves at most an orphaned temporary file, never a corrupt entry. Several xdist workers may
share one cache: an exclusive file lock per key makes the first worker compute an entry while
the others wait and then read it. An entry that cannot be read (damaged by hand, disk error) is
treated as missing and recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

# Bump when the meaning of a cached embedding changes (how images are decoded, occluded, batched).
CACHE_VERSION = 1

try:  # POSIX only; elsewhere workers may compute the same entry twice, which is still correct.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def cache_key(fields: Mapping[str, Any]) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class EmbeddingCache:
    """``get_or_compute(fields, compute)`` returns the cached tensor or computes and stores it."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self.last_hit = False  # whether the last get_or_compute read the cache

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / "embeddings" / key[:2] / f"{key}.safetensors"

    def get_or_compute(self, fields: Mapping[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        self.last_hit = False
        if self.root is None:
            return compute()
        key = cache_key(fields)
        path = self.path(key)
        found = self._read(path, key)
        if found is None:
            with self._lock(path):
                found = self._read(path, key)  # another worker may have written it meanwhile
                if found is None:
                    value = compute()
                    self._write(path, key, value, fields)
                    return value
        self.last_hit = True
        return found

    def _read(self, path: Path, key: str) -> torch.Tensor | None:
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("key") != key:
                    return None
                return f.get_tensor("embeddings")
        except Exception:  # unreadable entry: recompute and overwrite it
            return None

    def _write(self, path: Path, key: str, value: torch.Tensor, fields: Mapping[str, Any]) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            metadata = {"key": key, "fields": json.dumps(fields, sort_keys=True, default=str)}
            save_file({"embeddings": value.detach().float().cpu().contiguous()}, tmp, metadata=metadata)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

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
    factory = card.get("factory")
    if isinstance(factory, str) and ":" in factory:
        names.add(factory.partition(":")[0])
    return sorted(n for n in names if n and n != "builtins" and n != "torch" and not n.startswith("torch."))


def _module_code(name: str) -> str | None:
    """sha256 of a module's source (else of its file's bytes); None when neither can be read."""
    module = sys.modules.get(name)
    if module is None:
        return None
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
    return {k: v for k, v in code.items() if v is not None}


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
    classes and its factory are defined in, and the card (options, preprocessing). None only
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
