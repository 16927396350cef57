"""Shard speed-up: the demo grid in one process against ``--medrobust-shard i/N`` in N parallel
processes followed by ``medrobust merge``.

    .venv/bin/python benchmarks/bench_shards.py                  # the whole demo grid, 2 shards
    .venv/bin/python benchmarks/bench_shards.py --quick          # levels 0 / 0.1, two patch types
    .venv/bin/python benchmarks/bench_shards.py --levels 0,0.1,0.2 --rounds 2

Each run is ``pytest --medrobust-only --medrobust-config=fixtures/demo.toml -p no:cacheprovider``
in its own process with a fresh ``--medrobust-cache-dir`` (cold, as a CI job starts) and its own
report folder under a temporary directory. A round runs the unsharded grid and the sharded one
(N processes at once, then the merge), alternating which goes first, so a busy machine slows
both alike. Reported: wall times, and speed-up = unsharded / (slowest shard + merge), the time a
CI pipeline of N parallel jobs and a merge job would take, less its queueing. The merged
results must equal the unsharded run's cell for cell (every field but timings) and in summary.

Expect no more than the core count allows. By default each shard gets its share of the cores
(``OMP_NUM_THREADS`` = cores / shards), as shards on separate machines would; ``--threads all``
lets each take every core, which on this 2-core VM made 2 shards 5x slower than one process
(torch's threads of both processes contending for the same cores; docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = ROOT / "fixtures" / "demo.toml"
# The lungs probe stays: demo.toml's rules name it, and a rule naming no patch of the run is an error.
QUICK = ("0,0.1", "black_box,region(name='left_lung+right_lung')")
# Fields of a cell record that depend on the run, not on the measurement.
VOLATILE = frozenset({"duration_s", "cached", "cache_corrupt"})


def pytest_command(work: Path, name: str, extra: list[str]) -> list[str]:
    """The demo grid's command with its own cold cache and report folder (shards: under shards/)."""
    reports = work / ("shards" if name.startswith("shard-") else "") / name
    return [
        str(BIN / "pytest"), "--medrobust-only", f"--medrobust-config={CONFIG}", "-p", "no:cacheprovider", "-q",
        "--medrobust-cache-dir", str(work / f"cache-{name}"), "--medrobust-report-dir", str(reports),
        *extra,
    ]


def finish(process: subprocess.Popen[str], what: str) -> None:
    out, _ = process.communicate()
    if process.returncode not in (0, 1):  # 1: the demo gate fails on purpose
        raise SystemExit(f"{what} exited {process.returncode}:\n{out[-3000:]}")


def start(command: list[str], threads: int | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def unsharded(work: Path, extra: list[str]) -> float:
    started = time.perf_counter()
    finish(start(pytest_command(work, "unsharded", extra)), "the unsharded run")
    return time.perf_counter() - started


def sharded(work: Path, shards: int, extra: list[str], threads: int | None) -> tuple[list[float], float]:
    """Seconds of each shard (all started at once, each with ``threads`` torch threads) and of the
    merge after the last one."""
    started = time.perf_counter()
    processes = [start(pytest_command(work, f"shard-{i}", [*extra, "--medrobust-shard", f"{i}/{shards}"]), threads)
                 for i in range(1, shards + 1)]

    def wait(i: int) -> float:  # each shard's own finishing time, as its CI job would end
        finish(processes[i - 1], f"shard {i}/{shards}")
        return time.perf_counter() - started

    with ThreadPoolExecutor(shards) as pool:
        ends = list(pool.map(wait, range(1, shards + 1)))
    merge_started = time.perf_counter()
    merge = subprocess.run([str(BIN / "medrobust"), "merge", str(work / "shards"), "-o", str(work / "merged")],
                           cwd=ROOT, capture_output=True, text=True)
    if merge.returncode not in (0, 1):
        raise SystemExit(f"medrobust merge exited {merge.returncode}:\n{merge.stdout[-2000:]}{merge.stderr[-2000:]}")
    return ends, time.perf_counter() - merge_started


def comparable(results: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    cells = {c["id"]: {k: v for k, v in c.items() if k not in VOLATILE} for c in results["cells"]}
    return cells, {k: v for k, v in results["summary"].items() if k not in VOLATILE}


def check_same(work: Path) -> str:
    """'' when the merged run equals the unsharded one, else what differs."""
    full = json.loads((work / "unsharded" / "medrobust.json").read_text())
    merged = json.loads((work / "merged" / "medrobust.json").read_text())
    (a_cells, a_summary), (b_cells, b_summary) = comparable(full), comparable(merged)
    if a_cells.keys() != b_cells.keys():
        return f"cells differ: {sorted(a_cells.keys() ^ b_cells.keys())[:5]}"
    for cell_id, a in a_cells.items():
        if a != b_cells[cell_id]:
            keys = sorted(k for k in a.keys() | b_cells[cell_id].keys() if a.get(k) != b_cells[cell_id].get(k))
            return f"cell {cell_id} differs in {keys}"
    if a_summary != b_summary:
        return f"summaries differ in {sorted(k for k in a_summary if a_summary[k] != b_summary.get(k))}"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=2, help="parallel shard processes (default 2)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--levels", help="passed on as --medrobust-levels (default: the config's)")
    parser.add_argument("--patches", help="passed on as --medrobust-patches (default: the config's)")
    parser.add_argument("--quick", action="store_true", help=f"--levels {QUICK[0]} --patches {QUICK[1]}")
    parser.add_argument("--threads", default="share", help="torch threads per shard process: 'share' (default: the "
                        "cores divided between the shards, as separate machines would have them), 'all' (each shard "
                        "takes every core, oversubscribing them), or a number")
    args = parser.parse_args()
    if args.shards < 2:
        parser.error("--shards must be at least 2")
    levels, patches = (args.levels, args.patches) if not args.quick else (args.levels or QUICK[0], args.patches or QUICK[1])
    extra = [*(["--medrobust-levels", levels] if levels else []), *(["--medrobust-patches", patches] if patches else [])]
    load = os.getloadavg()
    import torch

    cores = len(os.sched_getaffinity(0))
    if args.threads not in ("share", "all") and not args.threads.isdigit():
        parser.error(f"--threads: expected share, all or a number, got {args.threads!r}")
    threads = {"share": max(1, cores // args.shards), "all": None}.get(args.threads, None)
    threads = int(args.threads) if args.threads.isdigit() else threads

    print(f"machine: nproc {cores}, torch threads {torch.get_num_threads()} unsharded, "
          f"{threads or torch.get_num_threads()} per shard ({args.threads}), "
          f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; grid {CONFIG.name} "
          f"{' '.join(extra) or '(whole)'}; {args.shards} shards, {args.rounds} round(s)", flush=True)
    rows = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="medrobust-shards-") as tmp:
            work = Path(tmp)
            if r % 2:
                ends, merge = sharded(work, args.shards, extra, threads)
                one = unsharded(work, extra)
            else:
                one = unsharded(work, extra)
                ends, merge = sharded(work, args.shards, extra, threads)
            differs = check_same(work)
            if differs:
                raise SystemExit(f"round {r + 1}: the merged shards differ from the unsharded run: {differs}")
        total = max(ends) + merge
        rows.append((one, max(ends), merge, one / total))
        print(f"  round {r + 1}: unsharded {one:6.1f}s   {args.shards} shards {max(ends):6.1f}s "
              f"(finished by {', '.join(f'{e:.1f}' for e in ends)}s) + merge {merge:4.1f}s = {total:6.1f}s   "
              f"speed-up {one / total:.2f}x   merged == unsharded: yes", flush=True)
    speedups = sorted(r[3] for r in rows)
    print(f"speed-up with {args.shards} processes (unsharded / (slowest shard + merge)): "
          f"{statistics.median(speedups):.2f}x ({speedups[0]:.2f}-{speedups[-1]:.2f}) over {args.rounds} round(s); "
          f"median unsharded {statistics.median(r[0] for r in rows):.1f}s, "
          f"shards {statistics.median(r[1] for r in rows):.1f}s, merge {statistics.median(r[2] for r in rows):.1f}s")


if __name__ == "__main__":
    main()
