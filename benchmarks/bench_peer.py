"""Peer comparison: CLIP_benchmark's retrieval evaluation against our grid, same model, images,
reports and thread count.

    .venv/bin/pip install --no-deps "clip_benchmark>=1.6.2,<1.7"   # the `bench` extra, minus its unused heavy deps
    .venv/bin/python benchmarks/bench_peer.py             # N = 128, 3 rounds, 2 threads
    .venv/bin/python benchmarks/bench_peer.py --n 32 --rounds 1   # a smoke run

The model is open_clip ViT-B-32 with random weights (built offline, as benchmarks/bench_grid.py
does); the peer gets the very same weights. The data are the first N rows of the bundled phantom
(fixtures/phantom). Both run in this process, in alternating order round by round, so a busy
machine slows both alike:

* peer = ``clip_benchmark.metrics.zeroshot_retrieval.evaluate`` over a DataLoader that decodes
  each PNG and applies open_clip's own preprocess (its retrieval path; fp32, no autocast);
* ours, clean = a fresh GridRunner with the cache off: load the data, decode the images, encode
  every unique report and every image, rank, summarise (the model is built before the clock);
* ours, occluded = the next cell on the same runner (``--patch`` at ``--level``): text
  embeddings are reused, the images are occluded and encoded again. The peer has no occlusion,
  so it would run its whole evaluation again for each such cell: the ratio is against that.

Then both compute Recall@k on the *same* embeddings (ours, fed to the peer's ``evaluate``
through a lookup model), which must agree: report->image exactly; image->report within the
band set by identical reports (the peer's ``topk`` breaks their exact ties arbitrarily, ours
ranks every tie ahead of the true match).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # the peer's progress bar, once per evaluation

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHANTOM = ROOT / "fixtures" / "phantom"
KS = (1, 5, 10)
NAME = "vit-b-32"


def first_rows(n: int, work: Path) -> list[dict[str, str]]:
    """A manifest of the phantom's first ``n`` rows in ``work`` (images linked, not copied)."""
    with open(PHANTOM / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not 0 < n <= len(rows):
        raise SystemExit(f"--n must be in 1..{len(rows)} (the rows of {PHANTOM / 'manifest.csv'}), got {n}")
    rows = rows[:n]
    (work / "images").symlink_to(PHANTOM / "images")
    with open(work / "manifest.csv", "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    return rows


def settings(work: Path, patch: str, level: float, batch_size: int) -> Any:
    from pytest_medrobust.config import Settings
    from pytest_medrobust.models import ModelSpec

    spec = ModelSpec(NAME, factory="pytest_medrobust.models.clip:load_clip",
                     options={"model_name": "ViT-B-32", "pretrained": None})
    return Settings(models=(spec,), dataset=str(work / "manifest.csv"), levels=(0.0, level), patches=(patch,),
                    device="cpu", cache=False, batch_size=batch_size, ks=KS)


def ours(s: Any, patch: str, level: float) -> tuple[float, float, Any]:
    """Seconds for the clean cell (data, decode, both towers, metrics) and one occluded cell."""
    from pytest_medrobust.runner import GridRunner

    torch.manual_seed(0)  # the same random weights every round
    runner = GridRunner(s)
    runner.model(NAME)  # built before the clock, as the peer's model is
    started = time.perf_counter()
    runner.prepare(NAME)
    runner.clean(NAME)
    clean = time.perf_counter() - started
    started = time.perf_counter()
    runner.measure(NAME, patch, level)
    return clean, time.perf_counter() - started, runner


class Pairs(torch.utils.data.Dataset):
    """The peer's retrieval dataset shape: (image tensor, [captions]) per row."""

    def __init__(self, rows: list[dict[str, str]], preprocess: Any):
        self.rows, self.preprocess = rows, preprocess

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[str]]:
        from PIL import Image

        with Image.open(PHANTOM / self.rows[i]["image"]) as im:
            return self.preprocess(im.convert("RGB")), [self.rows[i]["report"]]


def collate(batch: list[tuple[Any, list[str]]]) -> tuple[torch.Tensor, list[list[str]]]:
    images = [b[0] for b in batch]
    return (torch.stack(images) if isinstance(images[0], torch.Tensor) else torch.tensor(images)), [b[1] for b in batch]


def peer(model: Any, preprocess: Any, tokenizer: Any, rows: list[dict[str, str]], batch_size: int) -> tuple[float, dict]:
    from clip_benchmark.metrics import zeroshot_retrieval

    started = time.perf_counter()
    loader = torch.utils.data.DataLoader(Pairs(rows, preprocess), batch_size=batch_size, collate_fn=collate)
    metrics = zeroshot_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=list(KS))
    return time.perf_counter() - started, metrics


class Lookup(torch.nn.Module):
    """A 'model' for the peer's evaluate that returns our embeddings: image row i -> our image
    embedding i, caption token i -> our embedding of image i's report."""

    def __init__(self, images: torch.Tensor, texts: torch.Tensor):
        super().__init__()
        self.images, self.texts = images, texts

    def encode_image(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index]

    def encode_text(self, index: torch.Tensor) -> torch.Tensor:
        return self.texts[index]


def same_embeddings(label: str, images: torch.Tensor, unique: torch.Tensor, index: torch.Tensor) -> bool:
    """Our Recall@k and the peer's on the same embeddings; prints both, returns whether they agree."""
    from clip_benchmark.metrics import zeroshot_retrieval

    from pytest_medrobust.metrics import compute_ranks, summarize

    ranks = compute_ranks(images, unique, index)
    mine = summarize(ranks, KS)
    n = len(index)
    rows: Any = [(i, [i]) for i in range(n)]  # (image row, [its report's row]): a list is a map-style dataset
    loader: Any = torch.utils.data.DataLoader(rows, batch_size=64, collate_fn=collate)
    theirs = zeroshot_retrieval.evaluate(Lookup(images, unique[index]), loader, torch.tensor, "cpu", amp=False,
                                         recall_k_list=list(KS))
    # Identical reports score exactly alike: ours ranks them ahead of the true report (worst
    # case); the best case ranks them behind it. The peer's topk lands anywhere in between.
    duplicates = torch.bincount(index)[index] - 1
    best = ranks.i2t - duplicates
    ok = True
    print(f"  {label}: Recall@k on the same embeddings ({n} images, {len(unique)} unique reports)")
    for k in KS:
        t2i, peer_t2i = mine[f"t2i_R@{k}"], theirs[f"image_retrieval_recall@{k}"]
        i2t, i2t_best, peer_i2t = mine[f"i2t_R@{k}"], float((best <= k).double().mean()), theirs[f"text_retrieval_recall@{k}"]
        agree_t2i = abs(t2i - peer_t2i) < 1e-6
        agree_i2t = i2t - 1e-6 <= peer_i2t <= i2t_best + 1e-6
        ok &= agree_t2i and agree_i2t
        print(f"    k={k:2d}  report->image ours {t2i:.4f} peer {peer_t2i:.4f} {'ok' if agree_t2i else 'DIFFER'}   "
              f"image->report ours {i2t:.4f} (ties in our favour {i2t_best:.4f}) peer {peer_i2t:.4f} "
              f"{'ok' if agree_i2t else 'OUTSIDE'}   ours unique-text {mine[f'i2t_unique_R@{k}']:.4f}")
    return ok


@torch.inference_mode()
def same_model(model: Any, tokenizer: Any, runner: Any, unique: torch.Tensor) -> bool:
    """The peer's model (weights, activation, tokenizer) embeds the reports as ours does."""
    from pytest_medrobust.metrics import unique_texts

    texts, _ = unique_texts(runner.dataset().reports)
    theirs = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    gap = float((theirs - unique).abs().max())
    print(f"  same model: the peer's report embeddings differ from ours by at most {gap:.2e}")
    return gap < 1e-4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128, help="first N rows of fixtures/phantom")
    parser.add_argument("--rounds", type=int, default=3, help="alternating peer / ours rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patch", default="black_box", help="the occluded cell's patch type")
    parser.add_argument("--level", type=float, default=0.1, help="the occluded cell's level")
    args = parser.parse_args()
    if args.rounds < 1 or args.threads < 1 or args.batch_size < 1:
        parser.error("--rounds, --threads and --batch-size must be at least 1")
    load = os.getloadavg()
    torch.set_num_threads(args.threads)
    print(f"machine: nproc {len(os.sched_getaffinity(0))}, torch {torch.__version__} threads {torch.get_num_threads()}, "
          f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; N={args.n}, batch {args.batch_size}, "
          f"{args.rounds} rounds")
    import clip_benchmark  # noqa: F401  (fail before any work when the extra is missing)
    import open_clip

    with tempfile.TemporaryDirectory(prefix="medrobust-peer-") as tmp:
        work = Path(tmp)
        rows = first_rows(args.n, work)
        s = settings(work, args.patch, args.level, args.batch_size)
        peer_model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None, device="cpu",
                                                                          precision="fp32")
        tokenizer = open_clip.get_tokenizer("ViT-B-32")
        peer_model.eval()
        from pytest_medrobust.runner import GridRunner

        torch.manual_seed(0)  # the peer gets exactly the weights of our (seeded) model
        adapter: Any = GridRunner(s).model(NAME)  # clip.OpenClipAdapter; .model is the open_clip module
        peer_model.load_state_dict(adapter.model.state_dict())
        times: list[tuple[float, float, float]] = []
        runner = None
        for r in range(args.rounds):
            if r % 2:  # alternate which side goes first
                clean, occluded, runner = ours(s, args.patch, args.level)
                their, peer_metrics = peer(peer_model, preprocess, tokenizer, rows, args.batch_size)
            else:
                their, peer_metrics = peer(peer_model, preprocess, tokenizer, rows, args.batch_size)
                clean, occluded, runner = ours(s, args.patch, args.level)
            times.append((their, clean, occluded))
            print(f"  round {r + 1}: peer {their:6.2f}s   ours clean {clean:6.2f}s   ours {args.patch}@{args.level} "
                  f"{occluded:6.2f}s", flush=True)
        assert runner is not None
        their = statistics.median(t[0] for t in times)
        clean_ratio = sorted(t[1] / t[0] for t in times)
        occluded_ratio = sorted(t[2] / t[0] for t in times)
        print(f"peer (clip_benchmark {_version()}) {their:.2f}s; ours/peer clean cell "
              f"{statistics.median(clean_ratio):.3f} ({clean_ratio[0]:.3f}-{clean_ratio[-1]:.3f}), "
              f"ours/peer {args.patch}@{args.level} cell {statistics.median(occluded_ratio):.3f} "
              f"({occluded_ratio[0]:.3f}-{occluded_ratio[-1]:.3f}); medians over {args.rounds} rounds")
        print("  peer's own metrics (its preprocess, paired protocol): "
              + ", ".join(f"{k} {v:.4f}" for k, v in sorted(peer_metrics.items())))

        unique, index = runner.text_embeddings(NAME)
        ok = same_model(peer_model, tokenizer, runner, unique)
        ok &= same_embeddings("clean", runner.image_embeddings(NAME, lambda images, ids: images, "clean"), unique, index)
        # the grid's own seeded occluder of that cell (private: the runner keeps no embeddings)
        occluder = runner._seeded_occluder(NAME, args.patch, args.level, s.seed)
        occluded = runner.image_embeddings(NAME, occluder, f"{args.patch}@{args.level}")
        ok &= same_embeddings(f"{args.patch}@{args.level}", occluded, unique, index)
    print("same model, and the same Recall@k on the same embeddings" if ok else "ours and the peer DISAGREE (above)")
    if not ok:
        raise SystemExit(1)


def _version() -> str:
    from importlib.metadata import version

    return version("clip_benchmark")


if __name__ == "__main__":
    main()
