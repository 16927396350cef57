"""Memory that does not grow with N^2 or with the dataset: peak resident memory, measured.

    python benchmarks/bench_memory.py ranks --n 50000          # ranks + recall, 50k x 50k, dim 512
    python benchmarks/bench_memory.py manifest --rows 100000   # one occluded demo cell on N rows
    python benchmarks/bench_memory.py manifest --allocator system   # the same with glibc's malloc as it is

``ranks``: random L2-normalised embeddings (N images, N unique reports, dim 512), then
``compute_ranks`` + ``summarize`` as a cell does; prints the time and the peak resident memory
above the process's size once the embeddings exist (``VmHWM`` after resetting it, Linux).

``manifest``: a manifest of N rows over the bundled phantom images (each row its own id, image
file and report taken round-robin from the 300 phantoms), then one ``pytest --medrobust-only``
process running demo-plain on the clean and one occluded cell (black_box 10 %, no search, no
bootstrap), cold cache. Prints wall time and the process's peak resident memory (ru_maxrss of the
child), the figure issue 15 quotes for the old code: 4.6 GB and 9 min 40 s for 2 cells at 100k.
"""

from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def ranks(n: int, dim: int, chunk: int) -> None:
    import torch

    from pytest_medrobust.metrics import compute_ranks, summarize

    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(n, dim), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(n, dim), dim=1)
    index = torch.randperm(n)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current size
    before = _status("VmRSS")
    started = time.perf_counter()
    summarize(compute_ranks(images, texts, index, chunk_size=chunk))
    seconds = time.perf_counter() - started
    peak = _status("VmHWM") - before
    print(f"ranks + recall N={n} x {n} dim {dim} chunk {chunk}: {seconds:.1f} s, peak +{peak / 2**20:.0f} MB "
          f"above the embeddings ({2 * n * dim * 4 / 2**20:.0f} MB); an N x N float matrix would be {n * n * 4 / 2**30:.1f} GB")


def manifest(rows: int, work: Path, allocator: str = "tuned") -> None:
    phantom = ROOT / "fixtures" / "phantom"
    with open(phantom / "manifest.csv", newline="") as f:
        source = list(csv.DictReader(f))
    path = work / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "report"])
        for i in range(rows):
            r = source[i % len(source)]
            w.writerow([f"row-{i:06d}", str(phantom / r["image"]), r["report"]])
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--medrobust-only",
            f"--medrobust-dataset={path}", "--medrobust-models=demo-plain", "--medrobust-levels=0.1",
            "--medrobust-patches=black_box", "--medrobust-search-examples=0", "--medrobust-bootstrap=0",
            f"--medrobust-cache-dir={work / 'cache'}", f"--medrobust-report-dir={work / 'reports'}",
            f"--medrobust-cpu-allocator={allocator}"]
    started = time.perf_counter()
    peaks: dict[str, int] = {}
    with open(work / "out.txt", "w+") as out:
        child = subprocess.Popen(args, cwd=work, stdout=out, stderr=subprocess.STDOUT, text=True)
        while child.poll() is None:
            for key, value in _rollup(child.pid).items():
                peaks[key] = max(peaks.get(key, 0), value)
            time.sleep(0.25)
        out.seek(0)
        log = out.read()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if child.returncode not in (0, 1):
        raise SystemExit(f"pytest exited {child.returncode}:\n{log[-6000:]}")
    decoded = rows * 128 * 128
    gb = 2**30
    print(f"manifest of {rows} rows, clean + 1 occluded demo cell, cold, cpu allocator {allocator}: {seconds:.0f} s, "
          f"peak RSS {peak / gb:.2f} GB "
          f"(decoded images {decoded / gb:.2f} GB, memory-mapped)")
    print(f"  sampled every 0.25 s: peak anonymous (heap, not reclaimable) {peaks.get('Anonymous', 0) / gb:.2f} GB, "
          f"peak private {(peaks.get('Private_Clean', 0) + peaks.get('Private_Dirty', 0)) / gb:.2f} GB, "
          f"peak file-backed shared {(peaks.get('Shared_Clean', 0) + peaks.get('Shared_Dirty', 0)) / gb:.2f} GB")


def _rollup(pid: int) -> dict[str, int]:
    """Memory totals of a running process from /proc/PID/smaps_rollup (bytes; empty once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0]) * 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("ranks")
    r.add_argument("--n", type=int, default=50_000)
    r.add_argument("--dim", type=int, default=512)
    r.add_argument("--chunk", type=int, default=1024)
    m = sub.add_parser("manifest")
    m.add_argument("--rows", type=int, default=100_000)
    m.add_argument("--allocator", choices=("tuned", "system"), default="tuned", help="--medrobust-cpu-allocator")
    args = parser.parse_args()
    if args.what == "ranks":
        ranks(args.n, args.dim, args.chunk)
    else:
        with tempfile.TemporaryDirectory(prefix="medrobust-memory-") as tmp:
            manifest(args.rows, Path(tmp), args.allocator)


if __name__ == "__main__":
    main()
