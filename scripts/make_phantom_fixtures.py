"""Write the bundled phantom test split to fixtures/phantom (bit-for-bit reproducible): the
images, manifest.csv, and regions.csv (each study's lungs, heart, side marker and devices as
boxes, for the region probes of docs/regions.md).

    python scripts/make_phantom_fixtures.py             # the shipped split: seed 0, 300 images, 128 px
    python scripts/make_phantom_fixtures.py --out /tmp/p --n 2000 --seed 7   # a bigger one elsewhere

The demo models are trained on a split generated with another seed
(scripts/train_demo_models.py), so the shipped split is never seen in training.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pytest_medrobust.datasets.phantom import write_split

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {"seed": 0, "n": 300, "size": 128}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "fixtures" / "phantom"))
    parser.add_argument("--seed", type=int, default=SHIPPED["seed"])
    parser.add_argument("--n", type=int, default=SHIPPED["n"])
    parser.add_argument("--size", type=int, default=SHIPPED["size"])
    args = parser.parse_args()
    out = Path(args.out)
    if (out / "images").exists():
        shutil.rmtree(out / "images")  # no stale images from a larger earlier split
    manifest = write_split(out, seed=args.seed, n=args.n, size=args.size, split="test")
    print(f"wrote {manifest} ({args.n} studies, seed {args.seed}, {args.size} px)")


if __name__ == "__main__":
    main()
