"""The ``medrobust`` console command.

    medrobust merge reports/shard-*/medrobust.json -o reports/merged

merges the results JSONs of ``--medrobust-shard i/n`` runs into one results JSON with its HTML
and Markdown reports. Shards must come from the same dataset fingerprint and seed; a cell
measured in two shards with different numbers is an error.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import MedrobustError


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MedrobustError(f"{path}: cannot read a results JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("cells"), list):
        raise MedrobustError(f"{path}: not a pytest-medrobust results file (schema 1)")
    return data


def _check_shards_complete(shards: Sequence[tuple[Path, dict[str, Any]]]) -> None:
    """Every shard i/n of one n, each once, run with the same configuration."""
    seen: dict[int, Path] = {}
    counts = set()
    first_path, first = shards[0]
    reference = {k: v for k, v in first.get("config", {}).items() if k != "shard"}
    for path, data in shards:
        config = data.get("config", {})
        if {k: v for k, v in config.items() if k != "shard"} != reference:
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


def merge_shards(paths: Sequence[Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first shard's results (for seed, config, environment) and every shard's cell records,
    checked to belong to one run: same seed, same dataset fingerprint, no conflicting cells."""
    if not paths:
        raise MedrobustError("medrobust merge: no results files given")
    shards = [(p, _load(p)) for p in paths]
    first_path, first = shards[0]
    _check_shards_complete(shards)
    records: dict[str, dict[str, Any]] = {}
    weights: dict[str, tuple[str, Path]] = {}
    for path, data in shards:
        for name, card in (data.get("models") or {}).items():
            sha = str((card or {}).get("sha256"))
            if name in weights and sha != weights[name][0]:
                raise MedrobustError(f"{path}: model {name!r} has other weights (sha256) than in {weights[name][1]}")
            weights.setdefault(name, (sha, path))
        if data.get("seed") != first.get("seed"):
            raise MedrobustError(f"{path}: seed {data.get('seed')!r} differs from {first_path}'s {first.get('seed')!r}")
        dataset_sha = (data.get("dataset") or {}).get("sha256")
        if dataset_sha != (first.get("dataset") or {}).get("sha256"):
            raise MedrobustError(f"{path}: dataset fingerprint {dataset_sha} differs from {first_path}'s")
        for cell in data["cells"]:
            key = f"{cell.get('kind', 'grid')}:{cell['id']}"
            if key in records and records[key].get("metrics") != cell.get("metrics"):
                raise MedrobustError(f"{path}: cell {cell['id']} was also measured in another shard with other numbers")
            record = {**cell, "dataset": data.get("dataset"), "model_card": (data.get("models") or {}).get(cell["model"])}
            picture = (cell.get("search") or {}).get("picture")
            if picture:
                file = (path.parent / picture).resolve()
                if file.is_relative_to(path.parent.resolve()) and file.is_file():
                    search = {k: v for k, v in cell["search"].items() if k != "picture"}
                    record["search"] = {**search, "picture_png_base64": base64.b64encode(file.read_bytes()).decode()}
            records[key] = record
    return first, list(records.values())


def _merge(args: argparse.Namespace) -> int:
    from types import SimpleNamespace

    from .reporting.outputs import write_reports

    paths = [Path(p) for p in args.results]
    first, records = merge_shards(paths)
    config = {**first.get("config", {}), "shard": None, "merged_from": [str(p) for p in paths]}
    settings = SimpleNamespace(
        seed=first["seed"], report_dir=Path(args.output), baseline=SimpleNamespace(save_path=None), to_json=lambda: config
    )
    merged, written = write_reports(settings, records)
    summary = merged["summary"]
    for path in written:
        print(f"wrote {path}")
    counts = f"{summary['passed']} passed, {summary['failed']} failed, {summary['errors']} errors"
    print(f"gate {summary['verdict'].upper()}: {counts}")
    return 0 if summary["verdict"] == "pass" else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medrobust", description="pytest-medrobust utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge shard results into one results JSON and report")
    merge.add_argument("results", nargs="+", help="results JSON files of the shards")
    merge.add_argument("-o", "--output", default="reports", help="folder for the merged reports (default: reports)")
    args = parser.parse_args(argv)
    try:
        return _merge(args)
    except MedrobustError as exc:
        print(f"medrobust: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
