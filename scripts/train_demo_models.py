"""Train the two bundled demo models on a phantom train split and write them to fixtures/models.

    python scripts/train_demo_models.py            # both models, the recipe in the cards
    python scripts/train_demo_models.py --steps 50 --out /tmp/demo   # a quick smoke run

``demo-plain`` sees clean images; ``demo-occaug`` sees the same data with random occluders
(black, white, gray or noise boxes covering 0-60% of the image) on most images. The train
split is generated with a different seed than the shipped test split, so the test split is
never trained on. Each model's JSON card records the data seed, steps, training time and the
clean metrics measured on the shipped test split.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from pytest_medrobust.datasets import bundled_phantom_manifest, decode_dataset, load_manifest, to_batch
from pytest_medrobust.datasets.phantom import generate_study
from pytest_medrobust.metrics import retrieval_metrics, unique_texts
from pytest_medrobust.models.demo import DemoConfig, DemoDualEncoder, save_demo
from pytest_medrobust.occlusion.geometry import place_box, target_area

TRAIN_SEED = 1  # the shipped test split uses seed 0
ROOT = Path(__file__).resolve().parents[1]


def _study(args: tuple[int, int, int]) -> tuple[np.ndarray, str]:
    seed, index, size = args
    s = generate_study(seed, index, size)
    return s.image, s.report


def make_train_split(n: int, size: int, workers: int) -> tuple[torch.Tensor, list[str]]:
    jobs = [(TRAIN_SEED, i, size) for i in range(n)]
    with ProcessPoolExecutor(workers) as pool:
        studies = list(pool.map(_study, jobs, chunksize=64))
    images = torch.from_numpy(np.stack([img for img, _ in studies]))
    return images, [r for _, r in studies]


def occlusion_augment(images: torch.Tensor, rng: np.random.Generator, max_level: float = 0.6) -> torch.Tensor:
    """Random boxes with random fills on 80% of the images (the occaug recipe)."""
    out = images.clone()
    b, _, h, w = images.shape
    for i in range(b):
        if rng.random() > 0.8:
            continue
        box = place_box(target_area(rng.uniform(0.05, max_level), h, w), h, w, rng)
        region = out[i, :, box.top : box.top + box.height, box.left : box.left + box.width]
        fill = rng.integers(4)
        if fill == 0:
            region.fill_(0.0)
        elif fill == 1:
            region.fill_(1.0)
        elif fill == 2:
            region.fill_(float(rng.uniform(0.3, 0.7)))
        else:
            noise = torch.from_numpy(rng.normal(0.5, 0.25, size=region.shape[-2:]).astype(np.float32))
            region.copy_(noise.clamp(0, 1).expand_as(region))
    return out


def contrastive_loss(model: DemoDualEncoder, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """CLIP loss with soft targets: identical reports in a batch are all correct matches."""
    img = F.normalize(model.image_features(images), dim=-1)
    txt = F.normalize(model.text_features(texts), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
    _, owner = unique_texts(texts)
    same = (owner[:, None] == owner[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


@torch.inference_mode()
def clean_metrics(model: DemoDualEncoder) -> dict[str, float]:
    dataset = load_manifest(bundled_phantom_manifest(), name="phantom")
    pixels = decode_dataset(dataset, model.input_size, model.geometry)
    cpu = torch.device("cpu")
    images = torch.cat([model.encode_images(to_batch(pixels, slice(i, i + 256), cpu)) for i in range(0, len(pixels), 256)])
    texts, index = unique_texts(dataset.reports)
    return retrieval_metrics(images, model.encode_texts(texts), index)


def train(name: str, images: torch.Tensor, reports: list[str], args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = DemoDualEncoder(DemoConfig(input_size=args.size), name=name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    augment = name == "demo-occaug"
    started = time.perf_counter()
    model.train()
    for step in range(args.steps):
        idx = rng.choice(len(reports), size=args.batch_size, replace=False)
        batch = to_batch(images, torch.from_numpy(idx), torch.device("cpu"))
        if augment:
            batch = occlusion_augment(batch, rng)
        loss = contrastive_loss(model, batch, [reports[i] for i in idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"{name} step {step:5d} loss {loss.item():.3f}", flush=True)
    seconds = time.perf_counter() - started
    model.eval()
    metrics = clean_metrics(model)
    card = {
        "name": name,
        "training": {
            "data": "phantom train split",
            "data_seed": TRAIN_SEED,
            "n_train": len(reports),
            "torch_seed": args.seed,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "augmentation": "random black/white/gray/noise boxes, 5-60% of the area, on 80% of images"
            if augment
            else "none",
            "seconds": round(seconds, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "clean_metrics_on_shipped_test_split": {k: round(v, 4) for k, v in metrics.items()},
    }
    save_demo(model, Path(args.out) / f"{name}.safetensors", card)
    print(json.dumps(card, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo-plain,demo-occaug")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes generating the train split")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=str(ROOT / "fixtures" / "models"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    images, reports = make_train_split(args.n_train, args.size, args.workers)
    print(f"generated {len(reports)} training studies in {time.perf_counter() - started:.1f}s", flush=True)
    for name in args.models.split(","):
        train(name.strip(), images, reports, args)


if __name__ == "__main__":
    main()
