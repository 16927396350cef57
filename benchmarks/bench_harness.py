"""Images per second of the harness alone: every occluded cell of the demo grid's patch types
measured with a model whose forward is a fixed projection (benchmarks/harness_models.py), so the
time is the harness's own: batching the decoded images, planning and painting masks, ranking.

    python benchmarks/bench_harness.py                         # this checkout
    python benchmarks/bench_harness.py --baseline-src /tmp/old # and another copy of the package, interleaved

``--baseline-src`` is a folder holding another version's ``pytest_medrobust`` package (e.g.
``git archive HEAD | tar -x -C /tmp/old``); each round runs both in fresh processes, one after
the other, so a busy machine slows both alike and the ratio stays meaningful. Reported per patch
type: images/s of wall time and of process CPU time (the latter is steadier on a shared machine),
median over the rounds. Target (issue 15): >= 5,000 images/s per occluded cell at the demo size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PATCHES = ("black_box", "white_box", "noise_box", "blur_box", "annotation")
LEVELS = (0.1, 0.2)
WARM_UP_LEVEL = 0.05


def measure(threads: int, models: int) -> dict:
    """One process: a fresh runner on the bundled demo data (300 images, 128 x 128), the clean
    cell first (loads, decodes), then per patch type an untimed warm-up cell and every occluded
    cell of ``LEVELS``, each timed alone: the rate a cell sustains once the run is going."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    from pytest_medrobust.config import Settings
    from pytest_medrobust.models import ModelSpec
    from pytest_medrobust.runner import GridRunner

    specs = tuple(ModelSpec(f"fixed{i}", factory="harness_models:fixed") for i in range(models))
    runner = GridRunner(Settings(models=specs, device="cpu", cache=False))
    for spec in specs:
        runner.prepare(spec.name)
        runner.clean(spec.name)
    n = len(runner.dataset().ids)
    out: dict = {"n": n}
    for patch in PATCHES:
        for spec in specs:  # untimed: the patch's one-off set-up (dataset statistics, glyphs, kernels)
            runner.measure(spec.name, patch, WARM_UP_LEVEL)
        wall = cpu = 0.0
        for spec in specs:
            for level in LEVELS:
                w, c = time.perf_counter(), time.process_time()
                runner.measure(spec.name, patch, level)
                wall += time.perf_counter() - w
                cpu += time.process_time() - c
        cells = len(specs) * len(LEVELS)
        out[patch] = {"wall": n * cells / wall, "cpu": n * cells / cpu}
    return out


def run_in(src: Path | None, threads: int, models: int) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_harness as b, json; "
            f"print(json.dumps(b.measure({threads}, {models})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd="/tmp", capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"harness measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", type=Path, help="folder holding another version's pytest_medrobust")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=int, default=1, help="models of the same input size (masks are shared)")
    args = parser.parse_args()
    variants = {"this": None} | ({"baseline": args.baseline_src} if args.baseline_src else {})
    results: dict[str, list[dict]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for label, src in variants.items():
            results[label].append(run_in(src, args.threads, args.models))
    print(f"harness alone, {os.cpu_count()} cores, {args.threads} torch threads, {args.models} model(s), "
          f"{results['this'][0]['n']} images of 128 x 128, levels {LEVELS}, median of {args.rounds} rounds")
    print(f"{'patch':12s}" + "".join(f"{label + ' wall':>16s}{label + ' cpu':>14s}" for label in variants)
          + ("   ratio wall   ratio cpu" if len(variants) > 1 else ""))
    for patch in PATCHES:
        row = {label: {k: statistics.median(r[patch][k] for r in rs) for k in ("wall", "cpu")} for label, rs in results.items()}
        line = f"{patch:12s}" + "".join(f"{row[label]['wall']:12.0f} i/s{row[label]['cpu']:10.0f} i/s" for label in variants)
        if len(variants) > 1:
            line += f"{row['this']['wall'] / row['baseline']['wall']:12.2f}x{row['this']['cpu'] / row['baseline']['cpu']:11.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
