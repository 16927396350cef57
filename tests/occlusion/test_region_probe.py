"""Region probes (issue 13, part 3): modes, options, collection levels, and grid runs in which a
synthetic model that reads only one known box shows which region it depends on, driven by a
plain box file, NIH's BBox_List_2017.csv layout and VinDr-CXR's box CSV layout."""

from __future__ import annotations

import csv
import json

import numpy as np
import PIL.Image  # noqa: F401 - loaded before pytester's runs: C extensions cannot be imported twice
import pytest
import torch  # noqa: F401

import pytest_medrobust.runner  # noqa: F401
from pytest_medrobust.datasets import Dataset, Record
from pytest_medrobust.datasets.regions import RegionSpec, RegionWarning
from pytest_medrobust.errors import OcclusionError
from pytest_medrobust.occlusion import make_patch, parse_patch_spec
from pytest_medrobust.occlusion.geometry import target_area
from pytest_medrobust.occlusion.regions import RegionPatch, cell_levels, check_region_patches, plan_region_masks

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
KEY = (4, 4, 8, 8)  # x, y, w, h: the only pixels the key reader looks at
OTHER = (18, 18, 10, 10)  # a bright distractor it ignores

KEY_READER = '''
import torch


class KeyReader:
    """Reads the code from the mean of the key box (rows and columns 4..11) and nothing else."""

    name = "keyreader"
    input_size = (32, 32)
    geometry = "pad"

    def __init__(self, device):
        self.device = device

    def encode_images(self, x):
        v = x[:, 0, 4:12, 4:12].mean(dim=(1, 2)) * 255.0
        slot = ((v - 60.0) / 20.0).round().clamp(0, 7).long()
        return torch.nn.functional.one_hot(slot, 8).float().to(self.device) + 0.01

    def encode_texts(self, texts):
        words = {WORDS!r}
        slots = torch.tensor([words.index(t.split()[-1]) for t in texts])
        return torch.nn.functional.one_hot(slots, 8).float().to(self.device) + 0.01


def keyreader(device, **options):
    return KeyReader(device)
'''.replace("{WORDS!r}", repr(WORDS))


def write_images(root, names, n=24):
    """Images i: the key box holds intensity 60 + 20 * (i % 8), the distractor box another value."""
    from PIL import Image

    (root / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        img = np.full((32, 32), 40, np.uint8)
        x, y, w, h = KEY
        img[y : y + h, x : x + w] = 60 + 20 * (i % 8)
        x, y, w, h = OTHER
        img[y : y + h, x : x + w] = (i * 37) % 200 + 30
        img[(i * 7) % 32, 31] = 91  # every image's bytes unique
        Image.fromarray(img).save(root / "img" / names[i])
        rows.append({"id": f"case{i:03d}", "image": f"img/{names[i]}", "report": f"code {WORDS[i % 8]}"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "image", "report"])
        writer.writeheader()
        writer.writerows(rows)


def pyproject(patches, regions):
    return f"""
[tool.pytest.ini_options]
pythonpath = ["."]

[tool.medrobust]
models = [{{name = "keyreader", factory = "keymodel:keyreader"}}]
dataset = "manifest.csv"
dataset_options = {{regions = "{regions}"}}
levels = [0.0, 0.1, 0.3]
patches = {json.dumps(patches)}
device = "cpu"
search = {{enabled = false}}
bootstrap = {{resamples = 0}}

[tool.medrobust.thresholds]
retention = {{"i2t_unique_R@1" = 0.5}}
above_chance = {{}}
"""


def run(pytester, patches, regions, *args):
    pytester.makepyfile(keymodel=KEY_READER)
    pytester.makefile(".toml", pyproject=pyproject(patches, regions))
    result = pytester.runpytest("--medrobust-only", "-p", "no:cacheprovider", "--medrobust-no-cache", *args)
    path = pytester.path / "reports" / "medrobust.json"
    return result, (json.loads(path.read_text()) if path.exists() else None)


def by_patch(results, metric="i2t_unique_R@1"):
    return {(c["patch"], c["level"]): (c["metrics"][metric], c.get("region")) for c in results["cells"]}


# -- the probe's masks, options and levels ---------------------------------------------------------


def region_of(size=32):
    mask = np.zeros((size, size), bool)
    mask[4:12, 6:20] = True
    return mask


def test_inside_outside_box_masks():
    inside = {"a": region_of(), "b": region_of()}
    ids = ["a", "b", "none"]
    for mode, expect in (("inside", region_of()), ("outside", ~region_of())):
        specs = plan_region_masks(make_patch(f"region(name=r, mode={mode})"), inside, ids, 0.2, 0, (32, 32))
        assert np.array_equal(specs[0].to_numpy(), expect) and np.array_equal(specs[1].to_numpy(), expect)
        assert specs[2].area == 0  # an image without the region is left as it is
    probe = make_patch("region(name=r, mode=box)")
    specs = plan_region_masks(probe, inside, ids, 0.05, 0, (32, 32))
    again = plan_region_masks(probe, inside, ids, 0.05, 0, (32, 32))
    other_seed = plan_region_masks(probe, inside, ids, 0.05, 1, (32, 32))
    assert [s.to_numpy().tolist() for s in specs] == [s.to_numpy().tolist() for s in again]
    assert any(not np.array_equal(a.to_numpy(), b.to_numpy()) for a, b in zip(specs, other_seed, strict=True))
    for spec in specs[:2]:
        assert spec.area == target_area(0.05, 32, 32)  # exactly the level, like every patch type
        assert (spec.to_numpy() & region_of()).any()  # centred on a pixel of the region
    assert specs[2].area == 0


def test_options_are_checked_and_bare_words_are_strings():
    assert parse_patch_spec("region(name=heart, mode=outside)") == ("region", {"name": "heart", "mode": "outside"})
    probe = make_patch("region(name='left_lung+right_lung', fill=noise_box)")
    assert isinstance(probe, RegionPatch) and probe.names == ("left_lung", "right_lung") and probe.mode == "inside"
    for bad, why in (("region(name=heart, mode=around)", "mode"), ("region(name=heart, fill=region)", "fill"),
                     ("region(name=heart, size=3)", "no option 'size'"), ("region(name='')", "name")):
        with pytest.raises(OcclusionError, match=why):
            make_patch(bad)
    with pytest.raises(OcclusionError, match="placed from each image's regions"):
        probe.place(0.1, 32, 32, np.random.default_rng(0))


def test_level_free_probes_run_at_the_largest_level_only():
    levels = (0.0, 0.1, 0.3)
    assert cell_levels("black_box", levels) == levels
    assert cell_levels("region(name=heart, mode=box)", levels) == levels
    assert cell_levels("region(name=heart)", levels) == (0.0, 0.3)
    assert cell_levels("region(name=heart, mode=outside)", levels) == (0.0, 0.3)


def test_a_region_no_image_has_is_a_setup_error_naming_the_regions_there(tmp_path):
    records = [Record("a", tmp_path / "a.png", "r", "m, line 2")]
    dataset = Dataset("d", tmp_path / "m.csv", records)
    dataset.regions = {"a": {"heart": RegionSpec("heart", (32, 32), ((1.0, 1.0, 5.0, 5.0),))}}
    check_region_patches(["black_box", "region(name=heart)"], dataset)
    with pytest.raises(OcclusionError, match=r"has region 'hart'; regions there: heart \(1 images\)"):
        check_region_patches(["region(name=hart)"], dataset)


# -- grid runs -------------------------------------------------------------------------------------


def test_the_probe_of_the_region_a_model_reads_costs_the_most_and_others_nothing(pytester):
    write_images(pytester.path, [f"{i:03d}.png" for i in range(24)])
    with open(pytester.path / "boxes.csv", "w") as f:
        f.write("image,region,x,y,w,h\n")
        for i in range(24):
            f.write(f"case{i:03d},key,{','.join(map(str, KEY))}\n")
            f.write(f"case{i:03d},other,{','.join(map(str, OTHER))}\n")
    patches = ["black_box", "region(name=key)", "region(name=other)", "region(name=key, mode=outside)",
               "region(name=key, mode=box)"]
    result, results = run(pytester, patches, "boxes.csv")
    cells = by_patch(results)
    clean = cells[("black_box", 0.0)][0]
    assert clean == 1.0
    key, key_record = cells[("region(name=key)", 0.3)]
    assert key == pytest.approx(3 / 24)  # only the slot-0 images still decode (black reads as slot 0)
    assert cells[("region(name=other)", 0.3)][0] == clean  # an occluder outside the region costs nothing
    assert cells[("region(name=key, mode=outside)", 0.3)][0] == clean  # everything else hidden: nothing lost
    region_values = [v for (patch, level), (v, _) in cells.items() if patch.startswith("region") and level > 0]
    assert min(region_values) == key  # the probe of the region the model reads costs the most
    assert ("region(name=key)", 0.1) not in cells  # a level-free probe runs at one level
    assert key_record["images_with_region"] == 24 and key_record["n_images"] == 24
    assert key_record["mode"] == "inside" and key_record["name"] == "key"
    assert key_record["occluded_share"] == pytest.approx(64 / 1024)
    assert key_record["occluded_share_per_image"] == [pytest.approx(64 / 1024)] * 24
    outside = cells[("region(name=key, mode=outside)", 0.3)][1]
    assert outside["occluded_share"] == pytest.approx(1 - 64 / 1024)
    box = cells[("region(name=key, mode=box)", 0.1)][1]
    assert box["occluded_share"] == pytest.approx(target_area(0.1, 32, 32) / 1024)
    # gated like any cell: the key probe fails the retention limit, the others pass
    outcome = {(c["patch"], c["level"]): c["outcome"] for c in results["cells"]}
    assert outcome[("region(name=key)", 0.3)] == "failed" and outcome[("region(name=other)", 0.3)] == "passed"
    assert results["summary"]["verdict"] == "fail"
    # the region cells do not enter the model's robustness score nor its worst cell (their level is not a share)
    (summary,) = results["model_summaries"]
    assert list(summary["score_per_patch"]) == ["black_box"] and summary["score"] == summary["score_per_patch"]["black_box"]
    assert summary["worst_cell"]["id"] == "keyreader-black_box-0.30"
    assert summary["occluded_cells"]["total"] == 2 + 5  # black_box at 0.1, 0.3; three probes at 0.3, the box at both
    assert result.ret == 1


def test_nih_bbox_list_drives_region_cells(pytester):
    names = [f"{i + 1:08d}_000.png" for i in range(24)]
    write_images(pytester.path, names)
    x, y, w, h = KEY
    lines = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]  # the real file's header
    for i in range(0, 24, 2):  # half of the images have a box
        lines.append(f"{names[i]},Cardiomegaly,{x}.0,{y}.0,{w / 2},{h}.0,,,")
        lines.append(f"{names[i]},Cardiomegaly,{x + w / 2},{y}.0,{w / 2},{h}.0,,,")  # two boxes: one region
    lines.append("00099999_000.png,Nodule,10.0,10.0,4.0,4.0,,,")  # an image not in this dataset
    (pytester.path / "BBox_List_2017.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(RegionWarning, match=r"1 row\(s\) name no image of dataset manifest.*line 26 \('00099999_000.png'\)"):
        result, results = run(pytester, ["region(name=Cardiomegaly)"], "BBox_List_2017.csv")
    cells = by_patch(results)
    value, record = cells[("region(name=Cardiomegaly)", 0.3)]
    assert record["images_with_region"] == 12 and record["n_images"] == 24
    assert record["occluded_share"] == pytest.approx(12 * 64 / 1024 / 24)
    # the occluded images of slots 1..7 are lost; 0-slot images and unboxed ones stay
    lost = sum(1 for i in range(0, 24, 2) if i % 8)
    assert value == pytest.approx((24 - lost) / 24)
    assert results["dataset"]["regions"]["unmatched_rows"] == 1
    assert results["dataset"]["regions"]["format"] == "nih"


def test_vindr_box_csv_drives_region_cells_and_a_missing_region_exits_4(pytester):
    names = [f"{i:032x}.png" for i in range(24)]
    write_images(pytester.path, names)
    x, y, w, h = KEY
    lines = ["image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"]
    for i in range(24):
        stem = names[i][:-4]
        if i < 16:  # two radiologists' boxes of one finding are one region
            lines.append(f"{stem},Aortic enlargement,0,R9,{x},{y},{x + w},{y + h / 2}")
            lines.append(f"{stem},Aortic enlargement,0,R10,{x},{y + h / 2},{x + w},{y + h}")
        else:
            lines.append(f"{stem},No finding,14,R9,,,,")
    (pytester.path / "train.csv").write_text("\n".join(lines) + "\n")
    result, results = run(pytester, ["region(name='Aortic enlargement')"], "train.csv")
    value, record = by_patch(results)[("region(name='Aortic enlargement')", 0.3)]
    assert record["images_with_region"] == 16
    assert value == pytest.approx((24 - 14) / 24)  # 16 occluded, of which the 2 slot-0 images survive
    assert results["dataset"]["regions"]["no_finding_rows"] == 8
    result, _ = run(pytester, ["region(name=Cardiomegaly)"], "train.csv")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*has region 'Cardiomegaly'; regions there: Aortic enlargement (16 images)*"])
