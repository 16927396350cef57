"""The gallery's example pictures: one per patch type x occluded level, the same bytes every
time, drawn as the grid occludes the dataset's first image, listed in the JSON and shown once
each in the HTML."""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pytest_medrobust import occlusion
from pytest_medrobust.datasets import load_dataset
from pytest_medrobust.datasets.images import read_image, to_batch
from pytest_medrobust.reporting.examples import REGION_NOTE, examples_from_config, render_examples
from pytest_medrobust.reporting.html import render_html
from pytest_medrobust.reporting.outputs import is_safe_name, write_reports

PATCHES = ["black_box", "noise_box", "grid_cutout(fill='noise')", "region(name=heart)"]
LEVELS = [0.0, 0.1, 0.25]


@pytest.fixture(scope="module")
def phantom():
    return load_dataset(None)


def _record(cell_id: str, patch: str, level: float) -> dict:
    return {"id": cell_id, "kind": "grid", "model": "m", "patch": patch, "level": level, "outcome": "passed",
            "passed": True, "failures": [], "metrics": {"i2t_R@5": 0.5}, "n_images": 10,
            "nodeid": f"medrobust::m::test_recall[{cell_id}]"}


def _settings(tmp_path, config: dict) -> SimpleNamespace:
    config = {"models": ["m"], "bootstrap": {"resamples": 0}, **config}
    return SimpleNamespace(seed=3, report_dir=tmp_path / "reports", baseline=SimpleNamespace(save_path=None),
                           to_json=lambda: config)


def test_one_picture_per_patch_and_occluded_level_the_same_bytes_twice(phantom):
    first = render_examples(phantom, PATCHES, LEVELS, seed=3)
    again = render_examples(phantom, PATCHES, LEVELS, seed=3)
    assert list(first.index) == PATCHES[:3]  # config order; the region probe is skipped, said in a note
    assert all(list(row) == ["10%", "25%"] for row in first.index.values())
    assert len(first.files) == 3 * 2
    assert first.files == again.files
    assert REGION_NOTE in first.notes
    other_seed = render_examples(phantom, PATCHES, LEVELS, seed=4)
    assert other_seed.files != first.files  # the seed places the patch


def test_the_picture_shows_the_grids_mask_and_occluded_image(phantom):
    """Independent of the example code: occlude the first image with the grid's engine and
    compare with the picture's two panels (overlay left, occluded image right)."""
    examples = render_examples(phantom, ["black_box"], [0.25], seed=3)
    picture = np.asarray(Image.open(io.BytesIO(examples.files[examples.index["black_box"]["25%"]])).convert("RGB"))
    pixels = np.asarray(read_image(phantom.records[0].image))
    height, width = pixels.shape
    batch = to_batch(__import__("torch").from_numpy(pixels.copy())[None], slice(0, 1), __import__("torch").device("cpu"))
    occluded, (mask,) = occlusion.occlude(batch, [phantom.ids[0]], "black_box", 0.25, 3)
    expected = np.round(occluded[0, 0].numpy() * 255).astype(np.uint8)
    right = picture[:height, width + 4 : 2 * width + 4, 0]
    assert np.array_equal(right, expected)
    assert mask.area == round(0.25 * height * width)
    tinted = (picture[:height, :width, 0].astype(int) - picture[:height, :width, 1].astype(int)) > 40
    assert np.array_equal(tinted, mask.to_numpy())  # black under the red tint: red stands out exactly there


def test_reports_list_the_examples_and_embed_each_once(tmp_path, phantom):
    settings = _settings(tmp_path, {"dataset": None, "dataset_options": {}, "levels": LEVELS, "patches": PATCHES})
    records = [_record(f"m-{p}-{lv:.2f}", p, lv) for p in PATCHES[:1] for lv in LEVELS]
    results, written = write_reports(settings, records, dataset=lambda: phantom)
    reports = tmp_path / "reports"
    saved = json.loads((reports / "medrobust.json").read_text())
    assert saved["examples"] == results["examples"]
    assert list(saved["examples"]) == PATCHES[:3]
    names = [path for row in saved["examples"].values() for path in row.values()]
    assert len(names) == len(set(names)) == 6
    assert sorted(p.relative_to(reports).as_posix() for p in (reports / "examples").iterdir()) == sorted(names)
    assert saved["examples_notes"] == [REGION_NOTE]
    page = (reports / "medrobust.html").read_text()
    gallery = page[page.index('<section id="gallery">'):]
    gallery = gallery[: gallery.index("</section>")]
    for name in names:
        uri = base64.b64encode((reports / name).read_bytes()).decode()
        assert page.count(uri) == 1 and uri in gallery
    assert gallery.count('class="zoom"') == 6 and gallery.count("<tr>") == 1 + 3
    assert "Region probes are not shown here" in gallery
    # Re-rendered from the saved JSON and its folder (medrobust export): the same pictures.
    assert render_html(saved, root=reports).count("data:image/png;base64,") == 6


def test_a_patch_spec_that_is_no_file_name_is_made_safe_and_escaped(tmp_path, phantom):
    spec = "annotation(texts=['<b>x</b>/../../evil'])"  # a user's string inside the specification
    settings = _settings(tmp_path, {"dataset": None, "levels": [0.1], "patches": [spec, "black_box"]})
    results, _ = write_reports(settings, [_record("m-black_box-0.10", "black_box", 0.1)], dataset=lambda: phantom)
    reports = tmp_path / "reports"
    path = results["examples"][spec]["10%"]
    folder, file = path.split("/")
    assert folder == "examples" and is_safe_name(file) and "evil" in file  # readable, with a hash
    assert results["examples"]["black_box"]["10%"] == "examples/black_box-0.10.png"
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == sorted([file, "black_box-0.10.png"])
    assert (reports / path).is_file()
    page = (reports / "medrobust.html").read_text()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;/../../evil" in page


def test_merge_without_the_dataset_writes_no_examples_and_the_gallery_says_why(tmp_path):
    missing = tmp_path / "nowhere" / "manifest.csv"
    settings = _settings(tmp_path, {"dataset": str(missing), "levels": [0.1], "patches": ["black_box"]})
    results, _ = write_reports(settings, [_record("m-black_box-0.10", "black_box", 0.1)])  # loads from config
    assert results["examples"] == {}
    (note,) = results["examples_notes"]
    assert note.startswith("no example pictures: dataset") and str(missing) in note
    assert not (tmp_path / "reports" / "examples").exists()
    page = (tmp_path / "reports" / "medrobust.html").read_text()
    assert "no example pictures: dataset" in page


def test_loaded_from_the_config_as_the_runner_loads_it(phantom):
    config = {"dataset": None, "dataset_options": {}, "levels": [0.2], "patches": ["white_box"]}
    assert examples_from_config(config, 5).files == render_examples(phantom, ["white_box"], [0.2], 5).files


def test_a_gate_run_writes_the_examples_from_its_own_dataset(pytester):
    """Through the plugin (the runner's dataset, already loaded): the listed files are the
    pictures of the run's first image, one per patch x occluded level, whatever the models."""
    from tests.plugin.conftest import PYPROJECT
    from tests.plugin.fakes import MODELS, write_dataset

    pytester.makepyfile(fakemodels=MODELS)
    pytester.makefile(".toml", pyproject=PYPROJECT.replace('patches = ["black_box"]', 'patches = ["black_box", "blur_box"]'))
    write_dataset(pytester.path)
    pytester.runpytest("--medrobust", "-p", "no:cacheprovider")
    reports = pytester.path / "reports"
    results = json.loads((reports / "medrobust.json").read_text())
    expected = render_examples(load_dataset(str(pytester.path / "manifest.csv")), ["black_box", "blur_box"], [0.1, 0.5],
                               results["seed"])
    assert results["examples"] == expected.index
    assert {name: (reports / name).read_bytes() for name in expected.files} == expected.files
    assert results["examples_notes"] == []
    page = (reports / "medrobust.html").read_text()
    assert all(page.count(base64.b64encode(data).decode()) == 1 for data in expected.files.values())
