"""Tiny deterministic models and datasets for the plugin's own tests (written into pytester dirs).

The dataset: N images of 32 x 32; image i shows a bright square in one of 8 slots (slot i % 8),
and its report names the slot with a word. ``oracle`` reads the brightest slot and the slot word,
so it is perfect on clean images and loses exactly the images whose square is covered.
"""

SLOT_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]

MODELS = '''
import torch

WORDS = {WORDS!r}


def _slots(x):
    # 2 x 4 slots of 16 x 8 pixels over a 32 x 32 image
    g = x.mean(dim=1)
    return g.unfold(1, 16, 16).unfold(2, 8, 8).mean(dim=(-1, -2)).flatten(1)


class Oracle:
    name = "oracle"
    input_size = (32, 32)
    geometry = "pad"

    def __init__(self, device):
        self.device = device

    def encode_images(self, x):
        s = _slots(x.to(self.device))
        return torch.nn.functional.one_hot(s.argmax(dim=1), 8).float() + 0.01 * s

    def encode_texts(self, texts):
        slots = torch.tensor([WORDS.index(t.split()[-1]) for t in texts])
        return torch.nn.functional.one_hot(slots, 8).float().to(self.device)


class Constant(Oracle):
    name = "constant"

    def encode_images(self, x):
        return torch.ones(x.shape[0], 8, device=self.device)

    def encode_texts(self, texts):
        return torch.ones(len(texts), 8, device=self.device)


def oracle(device, **options):
    return Oracle(device)


def constant(device, **options):
    return Constant(device)


def tiny(device, seed=0, size=32, **options):
    """A small random-weight torch model: its weights hash changes with ``seed``."""
    from pytest_medrobust.models.demo import DemoConfig, DemoDualEncoder

    torch.manual_seed(int(seed))
    config = DemoConfig(input_size=int(size), channels=(8, 16), grid=2, hash_buckets=1024, text_width=32, embed_dim=16)
    return DemoDualEncoder(config, name="tiny").eval().to(device)


class Degraded(Oracle):
    """The oracle with every third image pointing at the wrong slot: a worse model version."""

    def encode_images(self, x):
        e = super().encode_images(x)
        return torch.roll(e, 1, dims=1) * (torch.arange(len(e))[:, None] % 3 == 0) + e * (torch.arange(len(e))[:, None] % 3 != 0)


def degraded(device, **options):
    return Degraded(device)


class Fragile(Oracle):
    """The oracle, except that any black (occluded) pixel makes it point at the wrong slot."""

    def encode_images(self, x):
        e = super().encode_images(x)
        occluded = (x.to(self.device) == 0).flatten(1).any(dim=1)[:, None]
        return torch.where(occluded, torch.roll(e, 1, dims=1), e)


def fragile(device, **options):
    return Fragile(device)


def broken(device, **options):
    raise RuntimeError("weights file /nowhere/model.safetensors not found")
'''.replace("{WORDS!r}", repr(SLOT_WORDS))


def write_dataset(root, n=24, *, name="manifest.csv", bad=None):
    """Write images and a manifest under ``root``; ``bad`` maps row index -> "missing"/"empty"/"corrupt"."""
    import csv

    import numpy as np
    from PIL import Image

    bad = bad or {}
    (root / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        slot = i % 8
        img = np.full((32, 32), 40, np.uint8)
        r, c = divmod(slot, 4)
        img[r * 16 + 2 : r * 16 + 14, c * 8 + 1 : c * 8 + 7] = 230
        img[(i * 7) % 32, (i * 5) % 32] = 90  # make every image's bytes unique
        path = root / "img" / f"{i:03d}.png"
        if bad.get(i) == "corrupt":
            path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        elif bad.get(i) == "missing":
            path.unlink(missing_ok=True)
        else:
            Image.fromarray(img).save(path)
        report = "" if bad.get(i) == "empty" else f"Finding in slot {SLOT_WORDS[slot]}"
        rows.append({"id": f"case{i:03d}", "image": f"img/{i:03d}.png", "report": report})
    with open(root / name, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image", "report"])
        writer.writeheader()
        writer.writerows(rows)
    return root / name


def make_project(pytester, pyproject, *, models=None, n=24):
    """The plugin tests' project in ``pytester``'s folder: ``models`` (default :data:`MODELS`) as
    ``fakemodels.py``, ``pyproject`` as pyproject.toml, and ``n`` images with their manifest."""
    pytester.makepyfile(fakemodels=MODELS if models is None else models)
    pytester.makefile(".toml", pyproject=pyproject)
    write_dataset(pytester.path, n=n)
    return pytester
