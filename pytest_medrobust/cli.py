"""The ``medrobust`` console command.

    medrobust merge reports/shard-*/medrobust.json -o reports/merged
    medrobust merge artifacts/ -o reports/merged

merges the results JSONs of ``--medrobust-shard i/n`` runs into one results JSON with its HTML
and Markdown reports. A folder (downloaded CI artifacts) is searched for the shards' results
(:func:`find_results`). Shards must come from the same dataset fingerprint and seed; a cell
measured in two shards with different numbers is an error. Each shard must be whole and as its
run wrote it: it lists the cells it was expected to measure (``summary.expected``), and its
summary is recomputed from its cells; an incomplete, errored or edited shard is refused.

Exit statuses: 0 the merged gate passes, 1 it fails, 4 a shard's verdict is ``error`` (a broken
set-up, as pytest's exit 4), 2 bad usage or input (a malformed, incomplete or edited shard).

    medrobust export reports/medrobust.json --csv cells.csv --plots plots --format svg
    medrobust compare baseline/medrobust.json reports/medrobust.json

``export`` writes a flat CSV, curve files and re-rendered reports from a saved run (exit 0, or 2
on bad input); ``compare`` prints B - A per cell and gated metric (exit 0 when every shared cell
has the same outcome, 1 when one differs, 2 on bad input). See reporting/export.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import MedrobustError

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 4

_SHARD = re.compile(r"([0-9]+)/([0-9]+)")
_OUTCOMES = ("passed", "failed", "error")
_KINDS = ("grid", "search")


class ErroredShard(MedrobustError):
    """A shard whose run could not measure its cells (verdict ``error``): exit 4, as pytest's."""


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _expect(path: Path, field: str, value: Any, ok: bool, what: str) -> None:
    if not ok:
        raise MedrobustError(f"{path}: field '{field}': expected {what}, got {_shown(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_cell(path: Path, i: int, cell: Any) -> None:
    """The fields of a cell record that merge relies on; a cell whose outcome disagrees with its
    own ``passed`` and ``failures`` was edited."""
    at = f"cells[{i}]"
    _expect(path, at, cell, isinstance(cell, dict), "a cell record (an object)")
    for key in ("id", "nodeid", "model", "patch"):
        value = cell.get(key)
        _expect(path, f"{at}.{key}", value, isinstance(value, str) and bool(value), "a non-empty string")
    # As in the config (parse_models); ids, whose patch part may hold any option text, are made
    # plain file names where they name one (reporting.outputs.picture_path).
    model = cell["model"]
    _expect(path, f"{at}.model", model, not any(bad in model for bad in ("/", "\\", "..", "\0")),
            "a model name without '/', '\\', '..' or NUL")
    level = cell.get("level")
    _expect(path, f"{at}.level", level, isinstance(level, (int, float)) and not isinstance(level, bool)
            and math.isfinite(level), "a number")
    _expect(path, f"{at}.kind", cell.get("kind"), cell.get("kind") in _KINDS, " or ".join(_KINDS))
    outcome = cell.get("outcome")
    _expect(path, f"{at}.outcome", outcome, outcome in _OUTCOMES, ", ".join(_OUTCOMES))
    _expect(path, f"{at}.metrics", cell.get("metrics"), isinstance(cell.get("metrics"), dict), "an object")
    _expect(path, f"{at}.failures", cell.get("failures"), isinstance(cell.get("failures"), list), "a list")
    _expect(path, f"{at}.search", cell.get("search"), cell.get("search") is None or isinstance(cell.get("search"), dict),
            "an object or null")
    if not cell["nodeid"].endswith(f"[{cell['id']}]"):
        raise MedrobustError(f"{path}: cell {cell['id']}: its id does not match its node id {cell['nodeid']}: edited")
    agrees = {
        "passed": cell.get("passed") is True and not cell["failures"],
        "failed": cell.get("passed") is False and bool(cell["failures"]),
        "error": cell.get("passed") is False,
    }[outcome]
    # Whether a passed cell's metrics really pass is judged once every shard is in (_rejudge).
    if not agrees:
        raise MedrobustError(
            f"{path}: cell {cell['id']}: outcome {outcome!r} disagrees with its passed={_shown(cell.get('passed'))} "
            f"and {len(cell['failures'])} failure(s): the shard was edited"
        )


def _load(path: Path) -> dict[str, Any]:
    """A shard's results, every field that merge uses checked: a malformed file is one line
    naming the file and the field, never a traceback."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MedrobustError(f"{path}: cannot read a results JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("cells"), list):
        raise MedrobustError(f"{path}: not a pytest-medrobust results file (schema 1)")
    config: Any = data.get("config")
    _expect(path, "config", config, isinstance(config, dict), "an object (the run's settings)")
    shard = config.get("shard")
    match = _SHARD.fullmatch(shard) if isinstance(shard, str) else None
    _expect(path, "config.shard", shard, shard is None or (match is not None and 1 <= int(match[1]) <= int(match[2])),
            "null or 'i/n' with 1 <= i <= n")
    _expect(path, "config.models", config.get("models"), isinstance(config.get("models", []), list), "a list")
    if config.get("merged_from") is not None:
        raise MedrobustError(f"{path}: the output of an earlier medrobust merge, not a shard's results: leave it out")
    _expect(path, "seed", data.get("seed"), _is_int(data.get("seed")), "an integer")
    for key in ("dataset", "models"):
        _expect(path, key, data.get(key), isinstance(data.get(key, {}), dict), "an object")
    for name, card in data.get("models", {}).items():
        _expect(path, f"models.{name}", card, card is None or isinstance(card, dict), "an object or null")
    _expect(path, "model_summaries", data.get("model_summaries"),
            isinstance(data.get("model_summaries", []), list)
            and all(isinstance(m, dict) for m in data.get("model_summaries", [])), "a list of objects")
    summary: Any = data.get("summary")
    _expect(path, "summary", summary, isinstance(summary, dict), "an object")
    expected = summary.get("expected")
    if expected is None:
        raise MedrobustError(
            f"{path}: field 'summary.expected' is missing: the shard does not list the cells it was to measure "
            "(written by an older pytest-medrobust, or edited); rerun it"
        )
    _expect(path, "summary.expected", expected, isinstance(expected, list) and all(isinstance(e, str) for e in expected),
            "a list of node ids")
    for i, cell in enumerate(data["cells"]):
        _check_cell(path, i, cell)
    return data


def _check_plan(path: Path, config: dict[str, Any]) -> None:
    """A shard records what its cells were assigned from (sharding.plan): the method and each
    model's estimated cost. Without it the shard's share cannot be rebuilt."""
    from .sharding import PLAN_METHOD

    plan: Any = config.get("shard_plan")
    if plan is None:
        raise MedrobustError(
            f"{path}: field 'config.shard_plan' is missing: the shard does not record how the grid was split "
            "(written by an older pytest-medrobust, or edited); rerun it"
        )
    _expect(path, "config.shard_plan", plan, isinstance(plan, dict), "an object")
    _expect(path, "config.shard_plan.method", plan.get("method"), plan.get("method") == PLAN_METHOD, repr(PLAN_METHOD))
    costs = plan.get("model_gflops")
    models = config.get("models") or []
    _expect(path, "config.shard_plan.model_gflops", costs, isinstance(costs, dict) and set(costs) == set(models) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in costs.values()
    ), "a positive number for each model of config.models")


def _assigned(path: Path, config: dict[str, Any]) -> set[str]:
    """The node ids of the cells the shard's configuration assigns to it, as collection does:
    what ``summary.expected`` must list when no cell was deselected (``-k``, ``-m``, ``--lf``)."""
    from .cells import cell_nodeid
    from .items import model_cells
    from .sharding import assign

    def strings(key: str) -> list[str]:
        value: Any = config.get(key)
        _expect(path, f"config.{key}", value, isinstance(value, list) and all(isinstance(v, str) for v in value),
                "a list of names")
        return list(value)

    models, patches = strings("models"), strings("patches")
    levels: Any = config.get("levels")
    numbers = (int, float)
    _expect(path, "config.levels", levels, isinstance(levels, list) and all(
        isinstance(v, numbers) and not isinstance(v, bool) for v in levels), "a list of numbers")
    search = config.get("search") or {}
    _expect(path, "config.search", search, isinstance(search, dict) and isinstance(search.get("enabled", False), bool),
            "an object with a boolean 'enabled'")
    search_levels = search.get("levels")
    _expect(path, "config.search.levels", search_levels, search_levels is None or (isinstance(search_levels, list) and all(
        isinstance(v, numbers) and not isinstance(v, bool) for v in search_levels)), "null or a list of numbers")
    cells = [c for m in models for c in model_cells(m, patches, levels, bool(search.get("enabled")), search_levels)]
    if config.get("shard"):
        _check_plan(path, config)
        examples: Any = search.get("max_examples")
        _expect(path, "config.search.max_examples", examples, _is_int(examples) and examples >= 0, "an integer >= 0")
        index, _, count = str(config["shard"]).partition("/")
        # As collection assigned them (sharding.share_cells), from the plan the shard recorded.
        shards = assign(cells, config["shard_plan"]["model_gflops"], int(count), examples)
        cells = [c for c, s in zip(cells, shards, strict=True) if s == int(index)]
    return {cell_nodeid(c) for c in cells}


def _grid(path: Path, config: dict[str, Any]) -> set[str]:
    """Every cell of the configuration's grid, whatever its shard."""
    return _assigned(path, {**config, "shard": None})


def _check_shard_whole(path: Path, data: dict[str, Any]) -> None:
    """A shard is merged only when its run finished and every expected cell is in it, as the run
    wrote it: its summary is recomputed from its cells and must match the stored one."""
    from .reporting.results import summarise_cells

    summary, cells = data["summary"], data["cells"]
    verdict = summary.get("verdict")
    if verdict == "running":
        raise MedrobustError(f"{path}: the run that wrote it never finished (verdict 'running'): rerun the shard")
    if verdict == "incomplete" or summary.get("complete") is False:
        missing = summary.get("missing") or []
        shown = ", ".join(map(str, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise MedrobustError(f"{path}: the shard is incomplete (verdict {verdict!r}; not measured: {shown or '?'}): rerun it")
    if verdict == "error":
        errored = [c["id"] for c in cells if c["outcome"] == "error"]
        raise ErroredShard(
            f"{path}: the shard's verdict is 'error': {len(errored)} cell(s) could not be measured, e.g. "
            f"{errored[0] if errored else 'none'}: fix the set-up and rerun it"
        )
    expected = set(summary["expected"])
    assigned = _assigned(path, data["config"])
    share = f"shard {data['config']['shard']}" if data["config"].get("shard") else "the grid"
    if expected - assigned:
        raise MedrobustError(f"{path}: cell {sorted(expected - assigned)[0]} is not a cell of {share} of its config: edited")
    if assigned - expected:
        raise MedrobustError(
            f"{path}: cell {sorted(assigned - expected)[0]} of {share} was not selected in the run that wrote it "
            f"({len(assigned - expected)} deselected, by -k, -m or --lf?): merge only whole shards"
        )
    seen: set[str] = set()
    for cell in cells:
        if cell["nodeid"] not in expected:
            raise MedrobustError(f"{path}: cell {cell['id']} is not among the shard's expected cells: the shard was edited")
        if cell["nodeid"] in seen:
            raise MedrobustError(f"{path}: cell {cell['id']} is listed twice: the shard was edited")
        seen.add(cell["nodeid"])
    absent = sorted(expected - seen)
    if absent:
        raise MedrobustError(f"{path}: cell {absent[0]} was expected but has no record ({len(absent)} missing): edited")
    failures = sum(bool(m.get("failures")) for m in data.get("model_summaries", []))
    recomputed = summarise_cells(cells, summary["expected"], interrupted=False, model_failures=failures)
    differ = [k for k in ("cells", "passed", "failed", "errors", "verdict") if summary.get(k) != recomputed[k]]
    if differ:
        stored = ", ".join(f"{k} {_shown(summary.get(k))}" for k in differ)
        actual = ", ".join(f"{k} {_shown(recomputed[k])}" for k in differ)
        raise MedrobustError(f"{path}: its summary says {stored} but its cells give {actual}: the shard was edited")


def _comparable(config: dict[str, Any]) -> Any:
    """A shard's configuration as merge compares it with the others': without what differs between
    the shards of one run (``shard``, ``shard_from``), and with absolute paths cut to their last
    part, since each CI job checks the project out in a folder of its own (the dataset itself is
    compared by its fingerprint)."""
    def cut(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        if isinstance(value, list):
            return [cut(v) for v in value]
        if isinstance(value, str):
            loader, sep, where = value.partition(":") if ":/" in value else ("", "", value)  # loader:/abs/path
            if where.startswith("/"):
                return f"{loader}{sep}{where.rstrip('/').rsplit('/', 1)[-1]}"
        return value

    return {k: cut(v) for k, v in config.items() if k not in ("shard", "shard_from")}


def _check_shards_complete(shards: Sequence[tuple[Path, dict[str, Any]]]) -> None:
    """Every shard i/n of one n, each once, run with the same configuration."""
    seen: dict[int, Path] = {}
    counts = set()
    first_path, first = shards[0]
    reference = _comparable(first["config"])
    for path, data in shards:
        config = data["config"]
        if _comparable(config) != reference:
            raise MedrobustError(f"{path}: its configuration differs from {first_path}'s (models, levels, thresholds, ...)")
        shard = config.get("shard")
        if not shard:
            continue
        index, _, count = str(shard).partition("/")
        if int(index) in seen:
            raise MedrobustError(f"{path}: shard {shard} given twice (also {seen[int(index)]})")
        seen[int(index)] = path
        counts.add(int(count))
    if len(counts) > 1:
        raise MedrobustError(f"shards of different splits given: {sorted(counts)}")
    if counts:
        absent = sorted(set(range(1, counts.pop() + 1)) - set(seen))
        if absent:
            raise MedrobustError(f"shard(s) {', '.join(map(str, absent))} missing: merge every shard of the split")


def merge_shards(paths: Sequence[Path]) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The first shard's results (for seed, config, environment), every shard's cell records and
    the node ids the shards were expected to measure, checked to be one whole run: each shard
    whole and unedited, same seed, same dataset fingerprint, no conflicting cells."""
    if not paths:
        raise MedrobustError("medrobust merge: no results files given")
    shards = [(p, _load(p)) for p in paths]
    first_path, first = shards[0]
    # First whether the files are shards of one run, then whether each is whole and unedited.
    _check_shards_complete(shards)
    weights: dict[str, tuple[str, Path]] = {}
    for path, data in shards:
        for name, card in data.get("models", {}).items():
            sha = str((card or {}).get("sha256"))
            if name in weights and sha != weights[name][0]:
                raise MedrobustError(f"{path}: model {name!r} has other weights (sha256) than in {weights[name][1]}")
            weights.setdefault(name, (sha, path))
        if data.get("seed") != first.get("seed"):
            raise MedrobustError(f"{path}: seed {data.get('seed')!r} differs from {first_path}'s {first.get('seed')!r}")
        dataset_sha = data.get("dataset", {}).get("sha256")
        if dataset_sha != first.get("dataset", {}).get("sha256"):
            raise MedrobustError(f"{path}: dataset fingerprint {dataset_sha} differs from {first_path}'s")
    for path, data in shards:
        _check_shard_whole(path, data)
    records: dict[str, dict[str, Any]] = {}
    origins: dict[str, Path] = {}  # record key -> the shard it came from
    expected: set[str] = set()
    for path, data in shards:
        models: Mapping[str, Any] = data.get("models", {})
        expected.update(data["summary"]["expected"])
        for cell in data["cells"]:
            key = f"{cell['kind']}:{cell['id']}"
            if key in records and records[key].get("metrics") != cell.get("metrics"):
                raise MedrobustError(f"{path}: cell {cell['id']} was also measured in another shard with other numbers")
            record = {**cell, "dataset": data.get("dataset"), "model_card": models.get(cell["model"])}
            picture = (cell.get("search") or {}).get("picture")
            if picture:
                file = (path.parent / str(picture)).resolve()
                if file.is_relative_to(path.parent.resolve()) and file.is_file():
                    search = {k: v for k, v in cell["search"].items() if k != "picture"}
                    record["search"] = {**search, "picture_png_base64": base64.b64encode(file.read_bytes()).decode()}
            records[key] = record
            origins[key] = path
    # Each shard holds its whole share; together the shares must be the whole grid.
    absent = sorted(_grid(first_path, first["config"]) - expected)
    if absent:
        raise MedrobustError(f"cell {absent[0]} of the grid is in no shard given ({len(absent)} missing): merge every shard")
    _rejudge(first_path, first, records, origins)
    return first, [*records.values(), *_sensitivity_records(shards)], sorted(expected)


def _sensitivity_records(shards: Sequence[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each model's sensitivity maps from the shard that made them (sharding.sensitivity_owner),
    as the records the results are built from; ``files`` maps each picture and array the entry
    names (relative to the report folder) to the shard's file, for the merge to copy."""
    owners: dict[str, Path] = {}
    out = []
    for path, data in shards:
        for model, entry in (data.get("sensitivity") or {}).items():
            if model in owners:
                raise MedrobustError(f"{path}: sensitivity maps of model {model!r} are also in {owners[model]}")
            owners[model] = path
            names = [entry.get("mean_map"), entry.get("npz"), *(w.get("png") for w in entry.get("worst") or [])]
            root = path.parent.resolve()
            files = {}
            for name in filter(None, names):
                file = (root / str(name)).resolve()
                if not file.is_relative_to(root):
                    raise MedrobustError(f"{path}: sensitivity file {name!r} of model {model!r} is outside its report folder")
                files[str(name)] = file
            out.append({"kind": "sensitivity", "model": model, "sensitivity": entry, "files": files})
    return out


def _rejudge(path: Path, first: dict[str, Any], records: dict[str, dict[str, Any]], origins: dict[str, Path]) -> None:
    """Judge every passed cell again from its own metrics, the run's thresholds and its model's
    clean cell (which may come from another shard): an outcome edited to "passed", with its
    failures removed and the summary made to agree, is refused, naming the shard it came from.
    (A failed cell may have failed its baseline, which merge cannot see: only passes are checked.)"""
    from .cells import Cell, level_key
    from .gate import Thresholds, chance_levels, judge_cell

    thresholds = Thresholds.from_json(first["config"].get("thresholds"), f"{path}: config.thresholds")
    cells = list(records.values())
    dataset = first.get("dataset") or {}
    n, unique = dataset.get("n_images"), dataset.get("n_unique_reports")
    clean = {
        c["model"]: c["metrics"] for c in cells
        if c.get("kind", "grid") == "grid" and level_key(c["level"]) == 0 and c["outcome"] != "error"
    }
    for key, c in records.items():
        if c["outcome"] != "passed":
            continue
        metrics = c["metrics"]
        chance = chance_levels(metrics, n, unique) if isinstance(n, int) and isinstance(unique, int) else {}
        cell = Cell(c["model"], c["patch"], float(c["level"]), c.get("kind", "grid"))
        verdict = judge_cell(
            thresholds, cell, metrics, clean=clean.get(c["model"]), intervals=c.get("intervals"), chance=chance
        )
        if verdict.failures:
            raise MedrobustError(
                f"{origins[key]}: cell {c['id']}: outcome 'passed' but its metrics fail the run's thresholds "
                f"({verdict.failures[0]}): the shard was edited"
            )


def _copy_sensitivity_files(records: list[dict[str, Any]], output: Path, config: Mapping[str, Any]) -> None:
    """The sensitivity pictures and arrays of every shard, into the merged report folder. A file
    the artifact lost is a warning: the numbers are merged, the picture is not."""
    from .files import atomic_write

    models = set()
    for record in records:
        if record.get("kind") != "sensitivity":
            continue
        models.add(record["model"])
        for name, source in record.pop("files").items():
            if source.is_file():
                atomic_write(output / name, source.read_bytes())
            else:
                print(f"medrobust merge: warning: {source} is missing (not in the shard's artifact?); "
                      f"the merged report has {record['model']}'s sensitivity numbers without it", file=sys.stderr)
    if not (config.get("sensitivity") or {}).get("enabled"):
        return
    for model in config.get("models") or []:
        if model not in models:
            print(f"medrobust merge: warning: no shard holds the sensitivity maps of model {model!r}", file=sys.stderr)


def find_results(given: Path, output: Path | None = None) -> list[Path]:
    """``given`` itself when it is a file; for a folder (downloaded shard artifacts, in any
    layout), every shard results file under it, in sorted order.

    A file named ``medrobust.json`` is a results file whatever it holds (a corrupt one is an
    error, naming it); ``medrobust-error.json`` is a shard stopped by a set-up error (exit 4).
    Another ``.json`` file is taken when it is pytest-medrobust's results (a renamed shard),
    skipped when it is valid JSON of something else (a baseline, a package file), and an error
    when it is not valid JSON: it may be a shard cut short. Other files (HTML, Markdown, pictures,
    logs) are skipped, and so is anything under ``output``, where an earlier merge wrote."""
    from .reporting.outputs import ERROR_FILE, RESULTS_FILE

    if not given.is_dir():
        if not given.exists():
            raise MedrobustError(f"{given}: no such file or folder")
        return [given]
    skip = output.resolve() if output is not None else None
    found: list[Path] = []
    for path in sorted(p for p in given.rglob("*.json") if p.is_file()):
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        if path.name == ERROR_FILE:
            try:
                message = json.loads(path.read_text(encoding="utf-8"))["summary"]["error"]
            except (OSError, ValueError, KeyError, TypeError):
                message = "(unreadable)"
            first_line = str(message).strip().splitlines()[0] if str(message).strip() else "?"
            raise ErroredShard(f"{path}: a shard stopped by a set-up error, no cell measured: {first_line}")
        if path.name == RESULTS_FILE:
            found.append(path)
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MedrobustError(
                f"{path}: not valid JSON ({exc}): it may be a shard's results cut short; fix or remove it"
            ) from exc
        tool = data.get("tool") if isinstance(data, dict) else None
        if isinstance(tool, dict) and tool.get("name") == "pytest-medrobust" and "cells" in data:
            found.append(path)
    if not found:
        raise MedrobustError(f"{given}: no shard results ({RESULTS_FILE}) found in the folder or below it")
    return found


def _merge(args: argparse.Namespace) -> int:
    from types import SimpleNamespace

    from .reporting.outputs import write_reports

    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise MedrobustError(f"-o/--output: {output} is a file, not a folder for the merged reports")
    paths = [found for given in args.results for found in find_results(Path(given), output)]
    first, records, expected = merge_shards(paths)
    config = {**first["config"], "shard": None, "shard_from": None, "shard_plan": None,
              "merged_from": [str(p) for p in paths]}
    settings = SimpleNamespace(
        seed=first["seed"], report_dir=output, baseline=SimpleNamespace(save_path=None), to_json=lambda: config
    )
    try:
        _copy_sensitivity_files(records, output, config)
        merged, written = write_reports(settings, records, expected=expected)
    except OSError as exc:
        raise MedrobustError(f"-o/--output: cannot write the merged reports into {output}: {exc}") from exc
    summary = merged["summary"]
    for path in written:
        print(f"wrote {path}")
    counts = f"{summary['passed']} passed, {summary['failed']} failed, {summary['errors']} errors"
    print(f"gate {summary['verdict'].upper()}: {counts}")
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL, "error": EXIT_ERROR}.get(summary["verdict"], EXIT_USAGE)


def _export(args: argparse.Namespace) -> int:
    """``medrobust export RESULTS.json``: CSV, curve files, HTML and Markdown from a saved run."""
    import time

    from .reporting import export

    path = Path(args.results)
    results = export.load_results(path)
    if not any((args.csv, args.plots, args.html, args.markdown, args.queries)):
        raise MedrobustError("medrobust export: nothing to do: give --csv, --plots, --html, --markdown or --queries")

    def timed(what: str, write: Any) -> None:
        started = time.perf_counter()
        try:
            written = write()
        except OSError as exc:
            raise MedrobustError(f"{what}: cannot write: {exc}") from exc
        for file in written:
            print(f"wrote {file}")
        print(f"{what}: {len(written)} file(s) in {time.perf_counter() - started:.2f} s")

    if args.csv:
        timed("--csv", lambda: [_written(Path(args.csv), export.cells_csv(results))])
    if args.plots:
        timed("--plots", lambda: export.write_curves(results, Path(args.plots), args.format))
    if args.html or args.markdown:
        html, markdown = (Path(args.html) if args.html else None), (Path(args.markdown) if args.markdown else None)
        timed("--html/--markdown", lambda: export.rerender(results, html, markdown, path.parent))
    if args.queries:
        ids, cells = export.read_queries(Path(args.queries))
        for line in export.broken_studies(ids, cells, results, k=args.k) or ["no study fell out of the top k"]:
            print(line)
    return EXIT_PASS


def _written(path: Path, text: str) -> Path:
    from .files import atomic_write

    atomic_write(path, text)
    return path


def _compare(args: argparse.Namespace) -> int:
    """``medrobust compare A.json B.json``: the delta table; exit 1 when an outcome differs."""
    from .reporting import export

    a, b = export.load_results(Path(args.a)), export.load_results(Path(args.b))
    lines, changed = export.compare_table(a, b, args.a, args.b)
    print("\n".join(lines))
    return EXIT_FAIL if changed else EXIT_PASS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="medrobust",
        description="pytest-medrobust utilities",
        epilog="exit status of merge: 0 pass, 1 gate fail, 4 a shard's verdict is error, 2 usage or bad input; "
        "of export: 0 written, 2 usage or bad input; of compare: 0 every shared cell has the same outcome, "
        "1 some cell's outcome differs in B, 2 usage or bad input",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge shard results into one results JSON and report")
    merge.add_argument("results", nargs="+", help="results JSON files of the shards, or folders holding them")
    merge.add_argument("-o", "--output", default="reports", help="folder for the merged reports (default: reports)")
    export = sub.add_parser("export", help="CSV, curve files, HTML or Markdown from a saved results JSON (no rerun)")
    export.add_argument("results", help="a results JSON (reports/medrobust.json)")
    export.add_argument("--csv", metavar="FILE", help="one row per cell x metric: value, interval, limits, verdict")
    export.add_argument("--plots", metavar="DIR", help="a curve file per patch type x gated metric")
    export.add_argument("--format", choices=("png", "svg"), default="png", help="curve file format (default: png)")
    export.add_argument("--html", metavar="FILE", help="re-render the HTML report")
    export.add_argument("--markdown", metavar="FILE", help="re-render the Markdown summary")
    export.add_argument("--queries", metavar="JSONL", help="a --medrobust-per-query file: list the studies each cell broke")
    export.add_argument("--k", type=int, default=5, help="with --queries: a study broke when it left the top k (default: 5)")
    compare = sub.add_parser("compare", help="a table of per-cell deltas between two results JSONs (B - A)")
    compare.add_argument("a", help="the results JSON to compare against (a baseline run)")
    compare.add_argument("b", help="the results JSON to compare (this run)")
    args = parser.parse_args(argv)  # a usage error exits 2 (argparse)
    try:
        if args.command == "export":
            return _export(args)
        if args.command == "compare":
            return _compare(args)
        return _merge(args)
    except ErroredShard as exc:
        print(f"medrobust: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MedrobustError as exc:
        print(f"medrobust: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
