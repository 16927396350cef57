"""How much the harness costs on top of the models' own forward passes, and what the cache saves.

    python benchmarks/bench_grid.py                 # demo models + random-weight ViT-B-32, N = 64..256
    python benchmarks/bench_grid.py --quick         # smaller N, fewer cells (a smoke run)
    python benchmarks/bench_grid.py --only demo --sizes 64,256,1024,4096 --rounds 3
    PYTHONPATH=/tmp/old python benchmarks/bench_grid.py ...   # the same against another version

Everything is measured in one run, so the ratios compare like with like on a noisy machine:

* harness overhead = wall time of the whole grid (decode, occlusion, forward passes, metrics,
  bootstrap, thresholds) / the same forward passes timed alone, both towers warmed first; the
  two are timed alternately, ``--rounds`` times, and the median ratio is reported (issue 15's
  targets: <= 1.3 for the demo models, <= 1.05 for ViT-B-32);
* warm / cold = a rerun with a warm embedding cache / the first run, both in fresh runners
  (target <= 0.1), and the same for the default `pytest --medrobust` grid as two subprocesses,
  process start-up included (target <= 0.5);
* images/s through the grid, and wall time against N (linear if time/N stays flat).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from pytest_medrobust.cells import Cell
from pytest_medrobust.config import Settings
from pytest_medrobust.datasets import to_batch
from pytest_medrobust.datasets.phantom import write_split
from pytest_medrobust.models import ModelSpec
from pytest_medrobust.runner import GridRunner

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 3
LEVELS = (0.0, 0.1, 0.3, 0.5)


def grid_cells(models: list[str], patches: tuple[str, ...]) -> list[Cell]:
    return [Cell(m, p, lv) for m in models for p in patches for lv in LEVELS]


def run_grid(settings: Settings, cells: list[Cell]) -> float:
    """Wall time of a fresh runner measuring every cell as the pytest items do."""
    torch.manual_seed(0)  # random-weight models: the same weights in every run, so the cache applies
    started = time.perf_counter()
    runner = GridRunner(settings)
    for cell in cells:
        runner.prepare(cell.model)
        m = runner.measure(cell.model, cell.patch, cell.level)
        runner.verdict(cell, m)  # thresholds on the point estimate and bootstrap, as the items judge
    return time.perf_counter() - started


@torch.inference_mode()
def forward_only(settings: Settings, cells: list[Cell]) -> float:
    """The forward passes the grid needs (one text pass per model, one image pass per distinct
    occlusion), on already-decoded images, with nothing else."""
    torch.manual_seed(0)
    runner = GridRunner(replace(settings, cache=False))
    distinct = {(c.model, c.patch if c.level else "", c.level) for c in cells}
    models = {c.model for c in cells}
    for name in models:  # load and decode outside the timing
        runner.prepare(name)
    bs = settings.batch_size
    total = 0.0
    for name in models:
        model = runner.model(name)
        pixels = runner.pixels(model)
        texts = sorted(set(runner.dataset().reports))
        model.encode_images(to_batch(pixels, slice(0, bs), runner.device))  # warm-up of both towers, untimed
        model.encode_texts(texts[:bs])
        started = time.perf_counter()
        for i in range(0, len(texts), bs):
            model.encode_texts(texts[i : i + bs])
        for _ in [d for d in distinct if d[0] == name]:
            for i in range(0, len(pixels), bs):
                model.encode_images(to_batch(pixels, slice(i, i + bs), runner.device))
        total += time.perf_counter() - started
    return total


def bench(label: str, models: list[ModelSpec], n: int, size: int, patches: tuple[str, ...], work: Path) -> dict:
    data = work / f"data-{size}-{n}"
    if not data.exists():
        write_split(data, seed=3, n=n, size=size)
    settings = Settings(
        models=tuple(models),
        dataset=str(data / "manifest.csv"),
        levels=LEVELS,
        patches=patches,
        device="cpu",
        cache_dir=work / f"cache-{label}-{n}",
    )
    cells = grid_cells([m.name for m in models], patches)
    rounds = []
    for _ in range(ROUNDS):  # alternated, so a busy machine slows both sides alike
        shutil.rmtree(settings.cache_dir, ignore_errors=True)
        forward = forward_only(settings, cells)
        cold = run_grid(settings, cells)
        warm = run_grid(settings, cells)
        rounds.append((forward, cold, warm))
    forward, cold, warm = (statistics.median(r[i] for r in rounds) for i in range(3))
    overheads = sorted(r[1] / r[0] for r in rounds)
    distinct = len({(c.model, c.patch if c.level else "", c.level) for c in cells})
    images = n * distinct
    row = {
        "label": label,
        "n": n,
        "cells": len(cells),
        "forward_s": forward,
        "grid_cold_s": cold,
        "grid_warm_s": warm,
        "overhead": statistics.median(overheads),
        "overhead_range": (overheads[0], overheads[-1]),
        "warm_over_cold": warm / cold,
        "images_per_s": images / cold,
    }
    print(
        f"{label:>10} N={n:5d} cells={len(cells):3d} forward {forward:7.2f}s  grid cold {cold:7.2f}s  "
        f"warm {warm:6.2f}s  overhead {row['overhead']:.3f} ({overheads[0]:.2f}-{overheads[-1]:.2f})  "
        f"warm/cold {row['warm_over_cold']:.3f}  "
        f"{row['images_per_s']:.0f} img/s",
        flush=True,
    )
    return row


def pytest_default_grid(work: Path) -> tuple[float, float]:
    """The README's grid as two `pytest --medrobust` subprocesses sharing a cache folder."""
    cache = work / "cache-default"
    args = [sys.executable, "-m", "pytest", "--medrobust-only", "-p", "no:cacheprovider", "-q",
            "--medrobust-cache-dir", str(cache), "--medrobust-report-dir", str(work / "reports")]
    times = []
    for _ in range(2):
        started = time.perf_counter()
        done = subprocess.run(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
        if done.returncode not in (0, 1):  # 1: the demo gate fails on purpose
            raise SystemExit(f"pytest --medrobust-only exited {done.returncode}")
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="comma-separated N values")
    parser.add_argument("--only", choices=("demo", "vit"), help="one of the two model sets")
    parser.add_argument("--rounds", type=int, default=3, help="alternated forward / grid rounds per point")
    parser.add_argument("--no-default-grid", action="store_true", help="skip the two `pytest --medrobust` processes")
    args = parser.parse_args()
    global ROUNDS
    ROUNDS = args.rounds
    sizes = [int(x) for x in (args.sizes or ("32,64" if args.quick else "64,128,256")).split(",")]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    with tempfile.TemporaryDirectory(prefix="medrobust-bench-") as tmp:
        work = Path(tmp)
        rows = []
        demo = [ModelSpec("demo-plain"), ModelSpec("demo-occaug")]
        vit = [ModelSpec("vit-b-32", factory="pytest_medrobust.models.clip:load_clip",
                         options={"model_name": "ViT-B-32", "pretrained": None})]
        for n in sizes if args.only in (None, "demo") else ():
            rows.append(bench("demo", demo, n, 128, ("black_box", "noise_box"), work))
        for n in sizes if args.only in (None, "vit") else ():
            rows.append(bench("ViT-B-32", vit, n, 224, ("black_box",), work))
        for label in ("demo", "ViT-B-32"):
            mine = [r for r in rows if r["label"] == label]
            per_image = ", ".join(f"N={r['n']}: {1000 * r['grid_cold_s'] / r['n']:.1f} ms/img" for r in mine)
            print(f"{label}: wall time per image as N grows (flat = linear): {per_image}")
        if not args.quick and not args.no_default_grid:
            cold, warm = pytest_default_grid(work)
            print(f"default `pytest --medrobust-only` grid (two processes): cold {cold:.1f}s, warm {warm:.1f}s, "
                  f"warm/cold {warm / cold:.3f}")


if __name__ == "__main__":
    main()
