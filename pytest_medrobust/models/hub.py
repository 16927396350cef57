"""Helpers shared by the upstream adapters (CLIP, CXR-RePaiR, MedCLIP, CXR-CLIP).

* **Checkpoints, loaded safely.** ``.safetensors`` files are read with safetensors; anything else
  with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers. A
  file that needs full unpickling (arbitrary Python objects: unpickling can run code) is refused
  unless the user passes ``trust_pickle=True``, and the error names the global refused.
  OmegaConf containers and hydra's resolver cache (CXR-CLIP's saved config) are the one
  exception: read as plain dicts/lists by inert stand-ins.
* **Hashes.** The sha256 of a weights file, for the model card (streamed, cached per file state).
* **Hub pieces.** Tokenizers and configs (Bio_ClinicalBERT, Swin) come from a local directory
  option when given, else from the Hugging Face hub id through the local HF cache. When neither
  works (offline, nothing cached) the error names the piece, the hub id and the option that
  points at a local copy.
* **Shared towers.** The BERT text tower (config, tokenizer checked against the checkpoint,
  ``BertModel`` sized from the checkpoint) and the torchvision ResNet50 that MedCLIP and CXR-CLIP both use; unpadded,
  equal-length text batches.

Nothing here downloads weights: the adapters take weights from files the user names.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError

PathLike = str | os.PathLike

_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, streamed; cached while the file's size and mtime are unchanged."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def bool_option(model: str, option: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """``value`` if it is a real boolean (or None when ``allow_none``), else a ModelLoadError.

    Strings are refused rather than interpreted: ``trust_pickle = "false"`` is truthy in Python,
    and reading it as true would unpickle (run code from) a file the user meant to refuse."""
    if isinstance(value, bool) or (allow_none and value is None):
        return value
    allowed = "true, false or left out" if allow_none else "true or false"
    raise ModelLoadError(
        f"{model}: option {option} must be a boolean ({allowed}), got {value!r} ({type(value).__name__})"
    )


def require_file(model: str, path: PathLike | None, option: str, how: str) -> Path:
    """``path`` as an existing file, or a ModelLoadError saying which option to set and how."""
    if path is None or str(path) == "":
        raise ModelLoadError(f"{model}: no weights given; pass {option}=/path/to/file. {how}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelLoadError(f"{model}: {option}={str(path)!r} is not a file. {how}")
    return p


# --- OmegaConf containers, read without omegaconf and without running code ----------------------
# CXR-CLIP's trainer (hydra + OmegaConf) converts only the DictConfig levels of its config to
# dicts before ``torch.save``, so list values stay omegaconf ListConfig objects. Each references
# its parent DictConfig, up to the root config, whose metadata holds hydra's resolver cache: a
# ``collections.defaultdict`` that ``${now:...}`` in hydra's run dir has filled. All of it is plain
# data (NEWOBJ + BUILD of a state dict; the defaultdict a REDUCE of ``dict`` plus SETITEMS), so it
# is read through torch's weights-only unpickler with inert stand-ins (and nothing else) added to
# its allowlist, then turned into plain dicts and lists. omegaconf itself is never imported.


class _OmegaStub:
    """Inert stand-in for an omegaconf class: records the pickled state, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


class _OmegaDict(_OmegaStub):
    pass


class _OmegaList(_OmegaStub):
    pass


class _OmegaNode(_OmegaStub):
    pass


_OMEGA_NAMES: dict[str, type] = {
    "omegaconf.dictconfig.DictConfig": _OmegaDict,
    "omegaconf.listconfig.ListConfig": _OmegaList,
    **{f"omegaconf.nodes.{n}": _OmegaNode for n in (
        "AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode", "PathNode", "EnumNode",
        "InterpolationResultNode", "ValueNode", "UnionNode")},
    "omegaconf.base.UnionNode": _OmegaNode,
    "omegaconf.base.Metadata": _OmegaStub,
    "omegaconf.base.ContainerMetadata": _OmegaStub,
}
# Globals the stand-ins cover besides omegaconf's own classes: the metadata's type fields
# (``typing.Any``, builtin types as values) and the resolver cache (``defaultdict(dict)``).
_STAND_IN_EXTRA = ("collections.defaultdict", "typing.Any")
_BUILTIN_TYPES = ("dict", "list", "tuple", "int", "str", "float", "bool", "bytes", "object")


def _defaultdict_as_dict(default_factory: Any = None, *args: Any) -> dict:
    """Stand-in for ``collections.defaultdict`` while unpickling: a plain dict with the same items
    (torch's weights-only unpickler fills only exact dicts; the default factory is dropped)."""
    return dict(*args)


_STAND_IN_CLASSES: dict[str, type] = {}


def _stand_in_class(full: str) -> type:
    """One class per omegaconf name, named like it (so the unpickler can look it up), made once."""
    if full not in _STAND_IN_CLASSES:
        module, _, name = full.rpartition(".")
        _STAND_IN_CLASSES[full] = type(name, (_OMEGA_NAMES[full],), {"__module__": module})
    return _STAND_IN_CLASSES[full]


def _omegaconf_globals() -> list[Any]:
    import builtins
    import typing

    stubs: list[Any] = [(_stand_in_class(full), full) for full in _OMEGA_NAMES]
    extra: list[Any] = [(typing.Any, "typing.Any"), (_defaultdict_as_dict, "collections.defaultdict")]
    extra += [getattr(builtins, n) for n in _BUILTIN_TYPES]
    return stubs + extra


def _covered_by_stand_ins(name: str | None) -> bool:
    return bool(name) and (str(name).startswith("omegaconf.") or name in _STAND_IN_EXTRA)


def _plain(obj: Any, _depth: int = 0) -> Any:
    """Replace omegaconf stand-ins by the plain values they hold."""
    if _depth > 200:
        raise ValueError("configuration nested too deeply")
    if isinstance(obj, _OmegaNode):
        return _plain(obj.__dict__.get("_val"), _depth + 1)
    if isinstance(obj, _OmegaDict):
        content = obj.__dict__.get("_content")
        return {k: _plain(v, _depth + 1) for k, v in content.items()} if isinstance(content, dict) else content
    if isinstance(obj, _OmegaList):
        content = obj.__dict__.get("_content")
        return [_plain(v, _depth + 1) for v in content] if isinstance(content, list) else content
    if isinstance(obj, _OmegaStub):
        return None
    if isinstance(obj, dict):
        return {k: _plain(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v, _depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, _depth + 1) for v in obj)
    return obj


def _weights_only_load(p: Path, *, stand_ins: bool) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped where the format allows; with the
    omegaconf stand-ins allowlisted when ``stand_ins``."""
    import contextlib

    if stand_ins and not hasattr(torch.serialization, "safe_globals"):
        raise pickle.UnpicklingError("this torch version cannot allowlist stand-ins (torch >= 2.5 can)")
    context = torch.serialization.safe_globals(_omegaconf_globals()) if stand_ins else contextlib.nullcontext()
    with context:
        try:  # memory-mapped: large checkpoints are not read twice into memory
            obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # legacy (non-zip) files cannot be mapped; others are real errors
                raise
            obj = torch.load(p, map_location="cpu", weights_only=True)
    return _plain(obj) if stand_ins else obj


class _StandInUnpickler(pickle.Unpickler):
    """Full unpickling (``trust_pickle``) with omegaconf classes read as the inert stand-ins, so a
    trusted file that also holds OmegaConf containers needs no omegaconf installed."""

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in _OMEGA_NAMES:
            return _stand_in_class(full)
        return super().find_class(module, name)


class _StandInPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: ``Unpickler`` and ``load``."""

    __name__ = "pytest_medrobust_stand_in_pickle"
    Unpickler = _StandInUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _StandInUnpickler(file, **kwargs).load()


def load_checkpoint_file(path: PathLike, *, model: str, trust_pickle: bool = False) -> Any:
    """Read a checkpoint without executing code from it, unless the user trusts the file.

    ``.safetensors`` -> dict of tensors. Otherwise ``torch.load(weights_only=True)``: tensors,
    dicts, lists, numbers and strings only; OmegaConf containers (saved configs, hydra's resolver
    cache included) are read as plain dicts and lists without importing omegaconf. A file that
    needs more (custom classes, numpy objects) is refused, naming the global refused, unless
    ``trust_pickle=True``.
    """
    bool_option(model, "trust_pickle", trust_pickle)  # a caller's string must never read as "trust"
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as exc:  # a corrupt or non-safetensors file
            raise ModelLoadError(f"{model}: cannot read {p} as safetensors: {exc}") from exc
    if _is_torchscript(p):
        if not trust_pickle:
            raise ModelLoadError(
                f"{model}: {p} is a TorchScript archive (as OpenAI's original ViT-B-32.pt), which holds code as well "
                f"as weights, so it was not loaded. Use a state-dict copy of the weights (for OpenAI CLIP: open_clip's "
                f"timm/vit_base_patch32_clip_224.openai, open_clip_model.safetensors), or, if you trust this file "
                f"(sha256 {sha256_file(p)}), pass the option trust_pickle=True to read its weights with torch.jit.load."
            )
        try:
            import warnings

            with warnings.catch_warnings():  # torch.jit's deprecation notice: nothing the user can act on
                warnings.simplefilter("ignore", FutureWarning)
                return dict(torch.jit.load(str(p), map_location="cpu").state_dict())
        except Exception as exc:
            raise ModelLoadError(f"{model}: cannot read TorchScript archive {p}: {type(exc).__name__}: {exc}") from exc
    try:
        try:
            return _weights_only_load(p, stand_ins=False)
        except pickle.UnpicklingError as exc:
            if not (_covered_by_stand_ins(_refused_global(exc)) or "omegaconf." in str(exc)):
                raise
        return _weights_only_load(p, stand_ins=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise ModelLoadError(
                f"{model}: {p} needs full unpickling, which can run arbitrary code, so it was not loaded "
                f"(torch.load(weights_only=True) refused it: {_refusal(exc, p)}). If you trust this file "
                f"(sha256 {sha256_file(p)}), pass the option trust_pickle=True; or convert it once to "
                f".safetensors."
            ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ModelLoadError(f"{model}: cannot read checkpoint {p}: {type(exc).__name__}: {exc}") from exc
    try:
        return _plain(torch.load(p, map_location="cpu", weights_only=False, pickle_module=_StandInPickleModule))
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"{model}: unpickling {p} needs the Python module {exc.name!r}; install it to load this file"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"{model}: cannot read checkpoint {p}: {type(exc).__name__}: {exc}") from exc


def _is_torchscript(p: Path) -> bool:
    """A TorchScript archive: a zip with compiled code (``code/``) and ``constants.pkl``."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _refused_global(exc: Exception) -> str | None:
    """The global (class or function) named in a weights-only refusal, if the message has one."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    for pattern in (
        r"Unsupported global: GLOBAL ([\w.]+)",
        r"unsupported GLOBAL ([\w.]+)",
        r"but got <class '([\w.]+)'>",
        r"unrecognized function <(?:built-in function |function )?([\w.]+)",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return None


def _unsafe_globals(p: Path) -> list[str]:
    """Every global of a torch.save file that neither torch nor the stand-ins allow (sorted)."""
    try:
        with torch.serialization.safe_globals(_omegaconf_globals()):
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(p)))
    except Exception:  # a legacy (non-zip) file or an older torch: only the refusal itself is known
        return []


def _refusal(exc: Exception, p: Path | None = None) -> str:
    """Why the weights-only loader refused a file, naming the global(s) it refused."""
    name = _refused_global(exc)
    others = [g for g in _unsafe_globals(p) if g != name] if p is not None else []
    if name:
        reason = f"it stores the Python object {name}"
        return reason + (f"; the file also references {', '.join(others)}" if others else "")
    if others:
        return f"it stores the Python object(s) {', '.join(others)}"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    m = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
    return m.group(1).strip() if m else (text.strip().splitlines() or ["unpickling refused"])[0]


def as_state_dict(obj: Any, *, model: str, source: PathLike, keys: Iterable[str] = ("state_dict", "model")) -> dict:
    """The tensor mapping inside a loaded checkpoint (the object itself, or under a usual key)."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for k in keys:
            inner = obj.get(k)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    raise ModelLoadError(f"{model}: {source} does not hold a state dict (a mapping of parameter names to tensors)")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix (DataParallel's ``module.``) when every key has it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def describe_keys(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


# --- Swin key layouts --------------------------------------------------------------------------
# transformers 4.x (which MedCLIP and CXR-CLIP were trained with) names a Swin block's parts
# ``attention.self.{query,key,value,relative_position_bias_table}``, ``attention.output.dense``,
# ``intermediate.dense`` and ``output.dense``; transformers 5 renamed them to ``attention.{q,k,v,o}_proj``,
# ``attention.relative_position_bias.relative_position_bias_table`` and ``mlp.fc1``/``mlp.fc2``.
# Checkpoints in either layout load into either version: keys are translated toward the layout
# of the installed model.
_SWIN_RENAMES_4_TO_5 = [
    (r"\.attention\.self\.query\.", ".attention.q_proj."),
    (r"\.attention\.self\.key\.", ".attention.k_proj."),
    (r"\.attention\.self\.value\.", ".attention.v_proj."),
    (r"\.attention\.self\.relative_position_bias_table$", ".attention.relative_position_bias.relative_position_bias_table"),
    (r"\.attention\.self\.relative_position_index$", ".attention.relative_position_bias.relative_position_index"),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"(\.blocks\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
]
_SWIN_RENAMES_5_TO_4 = [
    (r"\.attention\.q_proj\.", ".attention.self.query."),
    (r"\.attention\.k_proj\.", ".attention.self.key."),
    (r"\.attention\.v_proj\.", ".attention.self.value."),
    (r"\.attention\.relative_position_bias\.relative_position_bias_table$", ".attention.self.relative_position_bias_table"),
    (r"\.attention\.relative_position_bias\.relative_position_index$", ".attention.self.relative_position_index"),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
]


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def swin_keys_4_to_5(key: str) -> str:
    """A transformers-4.x Swin parameter name in the transformers-5 layout."""
    return _rename(key, _SWIN_RENAMES_4_TO_5)


def swin_keys_5_to_4(key: str) -> str:
    """A transformers-5 Swin parameter name in the transformers-4.x layout (upstream checkpoints)."""
    return _rename(key, _SWIN_RENAMES_5_TO_4)


# Buffers that older library versions saved and newer ones recompute (or keep non-persistent).
IGNORABLE_SUFFIXES = (
    "embeddings.position_ids",
    "embeddings.token_type_ids",
    "relative_position_index",
    "num_batches_tracked",
    "attn_mask",
)


def load_matching(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    model: str,
    source: PathLike,
    swin_prefixes: Iterable[str] = (),
    allow_unexpected: bool = False,
    optional: Iterable[str] = ("logit_scale",),
) -> dict[str, list[str]]:
    """Load ``state`` into ``module``: every parameter must be found with the right shape.

    Keys under ``swin_prefixes`` are translated between the transformers 4.x and 5 Swin layouts
    as needed. Saved buffers that the installed library recomputes (``position_ids``,
    ``relative_position_index``, ...) are dropped. Other extra keys are an error unless
    ``allow_unexpected`` (upstream CXR-CLIP loads with ``strict=False``); they are returned.
    Keys in ``optional`` (the contrastive temperature, unused for retrieval) may be absent.
    """
    expected = module.state_dict()
    swin_prefixes = tuple(swin_prefixes)
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        target = key
        if target not in expected and swin_prefixes and key.startswith(swin_prefixes):
            for candidate in (swin_keys_4_to_5(key), swin_keys_5_to_4(key)):
                if candidate in expected:
                    target = candidate
                    break
        if target in expected:
            mapped[target] = value
        elif key.endswith(IGNORABLE_SUFFIXES):
            continue
        else:
            unexpected.append(key)
    optional = set(optional)
    missing = [k for k in expected if k not in mapped and not k.endswith(IGNORABLE_SUFFIXES) and k not in optional]
    if missing:
        raise ModelLoadError(
            f"{model}: {source} lacks {len(missing)} parameter(s) the architecture needs: {describe_keys(missing)}"
            + (f"; it has unrecognised keys: {describe_keys(unexpected)}" if unexpected else "")
            + " (is it the right checkpoint or variant?)"
        )
    if unexpected and not allow_unexpected:
        raise ModelLoadError(f"{model}: {source} has {len(unexpected)} unrecognised key(s): {describe_keys(unexpected)}")
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in mapped.items() if v.shape != expected[k].shape
    ]
    if bad:
        raise ModelLoadError(f"{model}: {source} has tensors of the wrong shape: {describe_keys(bad, 4)}")
    for k in expected:
        if k not in mapped:  # an ignorable buffer or optional key the file lacks: keep the module's own
            mapped[k] = expected[k]
    module.load_state_dict(mapped, strict=True)
    return {"unexpected": unexpected}


# --- Hugging Face hub pieces -----------------------------------------------------------------


def hub_offline() -> bool:
    """Whether the HF hub must not be contacted (checked at call time, not at import time)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true"):
        return True
    if os.environ.get("TRANSFORMERS_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:
        return False


def hf_source(
    *, model: str, local_dir: PathLike | None, hub_id: str, option: str
) -> tuple[str, bool, str]:
    """(what to pass to from_pretrained, local_files_only, description for the card)."""
    if local_dir is not None and str(local_dir) != "":
        p = Path(local_dir).expanduser()
        if not p.is_dir():
            raise ModelLoadError(f"{model}: {option}={str(local_dir)!r} is not a directory")
        return str(p), True, str(p)
    return hub_id, hub_offline(), f"hf-hub:{hub_id}"


def _hub_error(model: str, what: str, hub_id: str, option: str, files: str, exc: Exception) -> ModelLoadError:
    offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelLoadError(
        f"{model}: cannot load the {what} of {hub_id!r} from the Hugging Face hub or its local cache{offline}: "
        f"{first}. Either download it once where the hub is reachable (`hf download {hub_id}`; it is then "
        f"read from the HF cache), or pass {option}=/path/to/a/directory holding {files}."
    )


def load_hf_tokenizer(
    *,
    model: str,
    local_dir: PathLike | None,
    hub_id: str,
    option: str,
    cache_dir: PathLike | None = None,
    fallback: Any = None,
    **kwargs: Any,
):
    """A tokenizer from ``local_dir`` or the HF cache/hub, with a clear error when neither works.

    ``AutoTokenizer`` first (what upstream calls); when it cannot tell the tokenizer class (a
    legacy folder: config.json without ``model_type`` and no tokenizer_config.json), ``fallback``
    (e.g. ``BertTokenizer``) is tried on the same files."""
    from transformers import AutoTokenizer

    source, local_only, _ = hf_source(model=model, local_dir=local_dir, hub_id=hub_id, option=option)
    common = dict(local_files_only=local_only, cache_dir=None if cache_dir is None else str(cache_dir), **kwargs)
    try:
        return AutoTokenizer.from_pretrained(source, **common)
    except Exception as exc:
        first = exc
    if fallback is not None:
        try:
            return fallback.from_pretrained(source, **common)
        except Exception:
            pass
    if local_dir:
        raise ModelLoadError(f"{model}: cannot load a tokenizer from {option}={str(local_dir)!r}: {first}") from first
    raise _hub_error(model, "tokenizer", hub_id, option, "vocab.txt and config.json", first) from first


def load_hf_config(
    *,
    model: str,
    local_dir: PathLike | None,
    hub_id: str,
    option: str,
    cache_dir: PathLike | None = None,
    config_class: Any = None,
    files: str = "config.json",
):
    """A transformers config from ``local_dir`` or the HF cache/hub, with a clear error.

    ``config_class`` (e.g. ``BertConfig``) reads config.json as that architecture, so a legacy
    file without ``model_type`` works too; otherwise ``AutoConfig``."""
    if config_class is None:
        from transformers import AutoConfig as config_class

    source, local_only, _ = hf_source(model=model, local_dir=local_dir, hub_id=hub_id, option=option)
    try:
        return config_class.from_pretrained(
            source, local_files_only=local_only, cache_dir=None if cache_dir is None else str(cache_dir)
        )
    except Exception as exc:
        if local_dir:
            raise ModelLoadError(f"{model}: cannot load config.json from {option}={str(local_dir)!r}: {exc}") from exc
        raise _hub_error(model, "config", hub_id, option, files, exc) from exc


# Words every clinical English WordPiece vocabulary spells without [UNK] (Bio_ClinicalBERT has
# each as a whole token); a tokenizer that loses them cannot give meaningful report embeddings.
PROBE_WORDS = ("lung", "effusion", "heart", "pneumothorax")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")


def load_bert_pieces(
    *,
    model: str,
    text_model_dir: PathLike | None,
    hub_id: str,
    tokenizer_hub_id: str | None = None,
    cache_dir: PathLike | None = None,
    word_embedding_rows: int | None = None,
    checkpoint: PathLike | None = None,
) -> tuple[Any, Any]:
    """A BERT ``(config, tokenizer)`` (Bio_ClinicalBERT for MedCLIP and CXR-CLIP) from
    ``text_model_dir`` or the HF cache; the tokenizer from ``tokenizer_hub_id`` when it differs.

    The tokenizer is checked against the checkpoint (``check_bert_tokenizer``) when
    ``word_embedding_rows`` is given: a wrong or incomplete folder fails here, naming it."""
    from transformers import BertConfig, BertTokenizer

    if text_model_dir is not None and str(text_model_dir) != "":
        folder = Path(text_model_dir).expanduser()
        if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
            raise ModelLoadError(
                f"{model}: text_model_dir={str(text_model_dir)!r} has no vocab.txt (nor tokenizer.json), so no "
                f"WordPiece vocabulary: the tokenizer would turn every word into [UNK]. Pass text_model_dir= a "
                f"folder holding vocab.txt and config.json of {tokenizer_hub_id or hub_id} "
                f"(`hf download {tokenizer_hub_id or hub_id} vocab.txt config.json --local-dir DIR`)."
            )
    config = load_hf_config(
        model=model, local_dir=text_model_dir, hub_id=hub_id, option="text_model_dir", cache_dir=cache_dir,
        config_class=BertConfig, files="vocab.txt and config.json",
    )
    tokenizer = load_hf_tokenizer(
        model=model, local_dir=text_model_dir, hub_id=tokenizer_hub_id or hub_id, option="text_model_dir",
        cache_dir=cache_dir, fallback=BertTokenizer,
    )
    if word_embedding_rows is not None:
        where = (
            f"text_model_dir={str(text_model_dir)!r}" if text_model_dir
            else f"the Hugging Face cache copy of {tokenizer_hub_id or hub_id!r}"
        )
        check_bert_tokenizer(
            model=model, tokenizer=tokenizer, rows=word_embedding_rows, where=where, checkpoint=checkpoint,
        )
    return config, tokenizer


def check_bert_tokenizer(*, model: str, tokenizer: Any, rows: int, where: str, checkpoint: PathLike | None) -> None:
    """The tokenizer fits the checkpoint's BERT: as many entries as word-embedding rows (a
    mismatch means another vocabulary: silently wrong ids, or an IndexError mid-run), and the
    ``PROBE_WORDS`` are not [UNK] (a vocabulary without clinical words)."""
    size = len(tokenizer)
    source = str(checkpoint) if checkpoint is not None else "the checkpoint"
    if size != rows:
        raise ModelLoadError(
            f"{model}: the tokenizer from {where} has {size:,} entries but {source} has {rows:,} word-embedding "
            f"rows; they must be equal (Bio_ClinicalBERT: 28,996). Point text_model_dir at the tokenizer the "
            f"checkpoint was trained with (emilyalsentzer/Bio_ClinicalBERT's vocab.txt and config.json)."
        )
    unk = getattr(tokenizer, "unk_token", None)
    if unk:
        lost = [w for w in PROBE_WORDS if unk in tokenizer.tokenize(w)]
        if lost:
            raise ModelLoadError(
                f"{model}: the tokenizer from {where} turns {', '.join(map(repr, lost))} into {unk}: its vocabulary "
                f"is not a clinical English WordPiece vocabulary, so report embeddings would be meaningless. Point "
                f"text_model_dir at emilyalsentzer/Bio_ClinicalBERT's vocab.txt and config.json."
            )


def build_bert(config: Any, state: Mapping[str, torch.Tensor], prefix: str, *, hidden_states: bool) -> torch.nn.Module:
    """A ``BertModel`` for the weights under ``prefix`` in ``state``: vocabulary size from its word
    embeddings (which must be present), a pooler when the state has one."""
    from transformers import BertModel

    config.vocab_size = int(state[f"{prefix}embeddings.word_embeddings.weight"].shape[0])
    config.output_hidden_states = hidden_states
    with_pooler = any(k.startswith(f"{prefix}pooler.") for k in state)
    return BertModel(config, add_pooling_layer=with_pooler).eval()


def build_resnet50(out_dim: int | None) -> torch.nn.Module:
    """torchvision ResNet50; ``fc`` = Linear(2048 -> out_dim, no bias), or removed when None."""
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    net.fc = torch.nn.Identity() if out_dim is None else torch.nn.Linear(net.fc.in_features, out_dim, bias=False)
    return net.eval()


def swin_tiny_config(**overrides: Any):
    """The configuration of ``microsoft/swin-tiny-patch4-window7-224`` (the fields SwinModel uses).

    Written out so that MedCLIP and CXR-CLIP need no hub access for their vision tower; a
    ``vision_model_dir`` option replaces it with the config.json of a local directory.
    """
    from transformers import SwinConfig

    fields: dict[str, Any] = dict(
        image_size=224,
        patch_size=4,
        num_channels=3,
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4.0,
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.1,
        hidden_act="gelu",
        use_absolute_embeddings=False,
        layer_norm_eps=1e-5,
        encoder_stride=32,
    )
    fields.update(overrides)
    return SwinConfig(**fields)


def tokenize_unpadded(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text on its own: special tokens added, truncated at ``max_length``."""
    out = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return [list(ids) for ids in out["input_ids"]]


def length_buckets(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by equal length (so no padding is needed), in chunks of ``batch_size``."""
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_len.setdefault(n, []).append(i)
    groups: list[list[int]] = []
    for n in sorted(by_len):
        idx = by_len[n]
        groups.extend(idx[i : i + batch_size] for i in range(0, len(idx), batch_size))
    return groups


def equal_length_batches(
    ids: list[list[int]], batch_size: int, device: torch.device
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices, B x L input ids on ``device``) for texts of equal token length, no padding needed."""
    for group in length_buckets([len(t) for t in ids], batch_size):
        yield group, torch.tensor([ids[i] for i in group], dtype=torch.long, device=device)


def gray_channel(x: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W from B x C x H x W: the channel itself when the channels are equal (the
    harness replicates grayscale), else PIL's 'L' weights, as upstream pipelines that convert to
    'L' would see it."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] == 3:
        if torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2]):
            return x[:, :1]
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
