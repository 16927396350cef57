"""The bundled default: the shipped phantom split, the demo models, and the default grid end to end."""

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_medrobust.datasets import bundled_phantom_manifest, decode_dataset, load_dataset, to_batch
from pytest_medrobust.datasets.phantom import write_split
from pytest_medrobust.metrics import retrieval_metrics, unique_texts
from pytest_medrobust.models.demo import demo_occaug, demo_plain

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_shipped_split_is_small_and_regenerates(tmp_path):
    shipped = bundled_phantom_manifest().parent
    total = sum(p.stat().st_size for p in shipped.rglob("*") if p.is_file())
    assert total <= 10 * 1024 * 1024
    # The split is written row by row from (seed, index): its first rows are a smaller split's.
    write_split(tmp_path, seed=0, n=12, size=128, split="test")
    with open(shipped / "manifest.csv", newline="") as f:
        shipped_rows = list(csv.DictReader(f))
    with open(tmp_path / "manifest.csv", newline="") as f:
        fresh_rows = list(csv.DictReader(f))
    assert len(shipped_rows) == 300
    assert fresh_rows == shipped_rows[:12]
    # Pixel for pixel up to float rounding: numpy's vectorised maths differs in the last bit
    # between builds (numpy 2.4.6 here turns one pixel of 00008 from 0 to 1 grey level off).
    differing = 0
    for row in fresh_rows:
        fresh = np.asarray(Image.open(tmp_path / row["image"]), dtype=np.int16)
        kept = np.asarray(Image.open(shipped / row["image"]), dtype=np.int16)
        assert fresh.shape == kept.shape and np.abs(fresh - kept).max() <= 1, row["image"]
        differing += int((fresh != kept).sum())
    assert differing <= 12, differing  # at most one rounding flip per image


def test_shipped_split_has_recurring_normal_reports():
    dataset = load_dataset()
    assert len(dataset.records) == 300
    assert dataset.n_unique_reports < len(dataset.records)


@pytest.mark.parametrize("factory", [demo_plain, demo_occaug])
def test_demo_models_match_their_cards_and_beat_chance(factory):
    model = factory(device="cpu")
    card = json.loads((FIXTURES / "models" / f"{model.name}.json").read_text())
    dataset = load_dataset()
    pixels = decode_dataset(dataset, model.input_size, model.geometry)
    with torch.inference_mode():
        cpu = torch.device("cpu")
        images = torch.cat([model.encode_images(to_batch(pixels, slice(i, i + 100), cpu)) for i in range(0, 300, 100)])
        texts, index = unique_texts(dataset.reports)
        metrics = retrieval_metrics(images, model.encode_texts(texts), index)
    recorded = card["clean_metrics_on_shipped_test_split"]
    assert metrics["i2t_unique_R@5"] == pytest.approx(recorded["i2t_unique_R@5"], abs=2e-4)
    chance = 5 / len(texts)
    assert metrics["i2t_unique_R@5"] > 10 * chance
    assert card["training"]["data_seed"] != 0  # never trained on the shipped split (seed 0)
    assert model.card()["sha256"] == hashlib.sha256((FIXTURES / "models" / f"{model.name}.safetensors").read_bytes()).hexdigest()


def test_default_grid_end_to_end(pytester):
    """`pytest --medrobust` in an empty folder runs the bundled default and writes every report;
    the occlusion-trained model holds up better than the plain one at heavy occlusion."""
    result = pytester.runpytest_subprocess(
        "--medrobust", "--medrobust-levels", "0,0.5", "--medrobust-search-examples", "2", "-p", "no:cacheprovider",
        "--junitxml=junit.xml",
    )
    assert result.ret in (0, 1), result.stdout.str()
    results = json.loads((pytester.path / "reports" / "medrobust.json").read_text())
    assert results["dataset"]["name"] == "phantom" and results["dataset"]["n_images"] == 300
    grid = {(c["model"], c["level"]): c["metrics"]["i2t_unique_R@5"] for c in results["cells"] if c["kind"] == "grid"}
    assert grid[("demo-plain", 0.5)] < grid[("demo-plain", 0.0)]
    assert grid[("demo-occaug", 0.5)] > grid[("demo-plain", 0.5)]
    for name in ("medrobust.html", "medrobust.md"):
        assert (pytester.path / "reports" / name).is_file()
    # The HTML shows the JSON's numbers: every grid cell's primary metric, exactly.
    html = (pytester.path / "reports" / "medrobust.html").read_text()
    shown = set()
    for value in re.findall(r'data-value="([^"]+)"', html):
        try:
            shown.add(float(value))
        except ValueError:
            pass
    for cell in results["cells"]:
        assert cell["metrics"]["i2t_unique_R@5"] in shown, cell["id"]
    assert (pytester.path / "junit.xml").is_file()
    assert "gate " in result.stdout.str()


@pytest.mark.slow
def test_the_demo_passes_the_robust_model_and_fails_the_fragile_one_identically_under_xdist(pytester):
    """`make demo`: with the demo's own gate, demo-occaug passes, demo-plain fails, and the paired
    comparison says occaug is more robust; every number is the same with -n 0 and -n 2."""
    pytest.importorskip("xdist")
    demo = FIXTURES / "demo.toml"
    runs = {}
    for workers in ("0", "2"):
        result = pytester.runpytest_subprocess(
            "--medrobust-only", f"--medrobust-config={demo}", "--medrobust-no-cache", "-p", "no:cacheprovider",
            "-n", workers, f"--medrobust-report-dir=reports-{workers}",
        )
        assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
        runs[workers] = json.loads((pytester.path / f"reports-{workers}" / "medrobust.json").read_text())
        assert "medrobust: dataset bundled demo dataset" in result.stdout.str()
    plain, occaug = runs["0"]["model_summaries"]
    assert (plain["model"], plain["verdict"]) == ("demo-plain", "fail")
    assert (occaug["model"], occaug["verdict"]) == ("demo-occaug", "pass")
    assert occaug["reference"]["model"] == "demo-plain" and occaug["reference"]["interval"][0] >= 0
    (comparison,) = runs["0"]["comparisons"]
    assert comparison["statement"].startswith("demo-occaug is more robust than demo-plain: demo-occaug - demo-plain = +")
    assert comparison["interval"][0] > 0
    assert runs["0"]["model_summaries"] == runs["2"]["model_summaries"]
    assert runs["0"]["comparisons"] == runs["2"]["comparisons"]
    strip = ("duration_s", "cached", "device")
    cells = [[{k: v for k, v in c.items() if k not in strip} for c in r["cells"]] for r in runs.values()]
    assert cells[0] == cells[1]
    assert runs["0"]["sensitivity"] == runs["2"]["sensitivity"]  # the maps' sha256 included (docs/sensitivity.md)
