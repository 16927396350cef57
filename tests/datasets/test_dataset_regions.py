"""Named regions per image (issue 13, part 3): the loaders' layouts, the join to a dataset and its
errors, the masks in the model input frame, and the phantom's own regions."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from pytest_medrobust.datasets import load_dataset
from pytest_medrobust.datasets.images import fit
from pytest_medrobust.datasets.phantom import regions_csv, study_regions
from pytest_medrobust.datasets.regions import RegionWarning, load_region_rows, region_masks
from pytest_medrobust.errors import DatasetError


def make_dataset(root, sizes, names=None):
    """Images of the given (width, height), dark with noise, and a manifest (ids img0, img1, ...)."""
    (root / "img").mkdir(exist_ok=True)
    names = names or [f"img{i}.png" for i in range(len(sizes))]
    rows = []
    for i, (w, h) in enumerate(sizes):
        pixels = (np.random.default_rng(i).integers(0, 30, (h, w))).astype(np.uint8)
        Image.fromarray(pixels).save(root / "img" / names[i])
        rows.append({"id": f"img{i}", "image": f"img/{names[i]}", "report": f"report {i}"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "image", "report"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def load(root, text, name="regions.csv", **options):
    (root / name).write_text(text)
    return load_dataset(str(root / "manifest.csv"), regions=str(root / name), **options)


# -- the model input frame -----------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", ["crop", "pad"])
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (224, 224)])
def test_a_bright_square_lies_inside_its_mask_after_preprocessing(tmp_path, geometry, size):
    """The box is sent through the image's own resize/crop/pad: wherever the bright square's
    content reaches the model input, the mask is, and the mask is hardly larger."""
    width, height = 300, 200
    image = np.full((height, width), 20, np.uint8)
    box = (170.0, 40.0, 230.0, 110.0)  # x0, y0, x1, y1: off centre, survives a centre crop
    image[40:110, 170:230] = 250
    (tmp_path / "img").mkdir()
    Image.fromarray(image).save(tmp_path / "img" / "a.png")
    (tmp_path / "manifest.csv").write_text("id,image,report\na,img/a.png,r\n")
    dataset = load(tmp_path, f"image,region,x_min,y_min,x_max,y_max\na,square,{','.join(map(str, box))}\n")
    mask = region_masks(dataset, "square", size, geometry)["a"]
    seen = np.asarray(fit(Image.fromarray(image), size, geometry), dtype=np.int16)
    reached = seen > 20 + 2  # every pixel the square brightened, however little
    assert reached.any() and not (reached & ~mask).any()
    core = seen > 135  # the square's half-level contour: the box's own outline
    assert mask.sum() <= core.sum() + 2 * (np.ptp(np.nonzero(core)[0]) + np.ptp(np.nonzero(core)[1]) + 4) * 2


def test_a_model_prepare_function_is_used_for_the_mask(tmp_path):
    make_dataset(tmp_path, [(100, 60)])
    dataset = load(tmp_path, "image,region,x,y,w,h\nimg0,r,0,0,50,60\n")

    def prepare(im):  # mirror and resize: a geometry no built-in geometry has
        return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((20, 12), Image.Resampling.NEAREST)

    mask = region_masks(dataset, ["r"], (12, 20), "crop", prepare)["img0"]
    assert mask[:, 10:].all() and not mask[:, :10].any()  # the left half, mirrored to the right


# -- the loaders' layouts ---------------------------------------------------------------------------------


def test_nih_layout_union_and_unmatched_rows(tmp_path):
    make_dataset(tmp_path, [(64, 64), (64, 64)], names=["00000001_000.png", "00000002_001.png"])
    text = ("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
            "00000001_000.png,Atelectasis,10.5,20.0,5.0,6.0,,,\n"
            "00000001_000.png,Atelectasis,40.0,40.0,4.0,4.0,,,\n"
            "00000002_001.png,Nodule,1.0,2.0,3.0,4.0,,,\n"
            "00030805_000.png,Mass,1.0,2.0,3.0,4.0,,,\n")
    with pytest.warns(RegionWarning, match=r"1 row\(s\) name no image.*BBox_List_2017.csv, line 5 \('00030805_000.png'\)"):
        dataset = load(tmp_path, text, "BBox_List_2017.csv")
    spec = dataset.regions["img0"]["Atelectasis"]
    assert spec.boxes == ((10.5, 20.0, 15.5, 26.0), (40.0, 40.0, 44.0, 44.0)) and spec.image_size == (64, 64)
    assert spec.original_mask().sum() == 6 * 6 + 16  # 10.5..15.5 covers six columns: any overlap counts
    assert dataset.info["regions"]["names"] == {"Atelectasis": 1, "Nodule": 1}
    assert dataset.info["regions"]["unmatched_rows"] == 1 and dataset.info["regions"]["format"] == "nih"
    assert json.dumps(dataset.card())  # the card (results JSON) stays plain JSON


def test_nih_bad_rows_name_file_and_line(tmp_path):
    make_dataset(tmp_path, [(64, 64)], names=["00000001_000.png"])
    text = ("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
            "00000001_000.png,Mass,10,20,-5,6,,,\n"
            "00000001_000.png,Mass,ten,20,5,6,,,\n")
    with pytest.raises(DatasetError, match=r"(?s)2 problem.*line 2: empty or negative box \(width -5.*line 3: x = 'ten'"):
        load(tmp_path, text, "BBox_List_2017.csv")
    with pytest.raises(DatasetError, match="not an NIH BBox_List_2017.csv header"):
        load(tmp_path, "Image Index,Finding Label,x,y\n", "nih.csv", regions_format="nih")


def test_vindr_layout_no_finding_rows_and_empty_boxes(tmp_path):
    make_dataset(tmp_path, [(80, 60), (80, 60)], names=["9a5094b2.png", "1c3d.png"])
    header = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
    text = header + ("9a5094b2,Cardiomegaly,3,R10,10,20,50,40\n"
                     "9a5094b2,Cardiomegaly,3,R8,12,22,52,44\n"
                     "1c3d,No finding,14,R9,,,,\n")
    dataset = load(tmp_path, text)
    assert dataset.regions["img0"]["Cardiomegaly"].boxes == ((10.0, 20.0, 50.0, 40.0), (12.0, 22.0, 52.0, 44.0))
    assert "img1" not in dataset.regions and dataset.info["regions"]["no_finding_rows"] == 1
    with pytest.raises(DatasetError, match=r"line 2: 'Nodule/Mass' has an empty box"):
        load(tmp_path, header + "1c3d,Nodule/Mass,8,R9,,,,\n")
    with pytest.raises(DatasetError, match=r"line 2: empty or negative box \(x_max 5 <= x_min 10"):
        load(tmp_path, header + "1c3d,Nodule/Mass,8,R9,10,10,5,20\n")


def test_boxes_outside_the_image(tmp_path):
    make_dataset(tmp_path, [(64, 48)])
    with pytest.raises(DatasetError, match=r"regions.csv, line 2: box \(70, 0, 80, 10\) lies outside its 64x48 image img0.png"):
        load(tmp_path, "image,region,x_min,y_min,x_max,y_max\nimg0,r,70,0,80,10\n")
    clipped = r"1 box\(es\) reach past their image and were clipped.*line 2 \(60, 40, 70, 50\) in 64x48"
    with pytest.warns(RegionWarning, match=clipped):
        dataset = load(tmp_path, "image,region,x_min,y_min,x_max,y_max\nimg0,r,60,40,70,50\n")
    assert dataset.regions["img0"]["r"].boxes == ((60.0, 40.0, 64.0, 48.0),)


def test_plain_json_with_a_mask_png_and_ambiguous_keys(tmp_path):
    make_dataset(tmp_path, [(32, 32), (32, 32)], names=["a.png", "b.png"])
    mask = np.zeros((32, 32), np.uint8)
    mask[3:9, 5:7] = 255
    Image.fromarray(mask).save(tmp_path / "heart.png")
    items = [{"image": "img0", "region": "heart", "mask": "heart.png"},
             {"id": "b.png", "region": "marker", "x": 1, "y": 1, "w": 2, "h": 2}]
    dataset = load(tmp_path, json.dumps(items), "regions.json")
    assert np.array_equal(dataset.regions["img0"]["heart"].original_mask(), mask > 0)
    assert dataset.regions["img1"]["marker"].boxes == ((1.0, 1.0, 3.0, 3.0),)
    Image.fromarray(mask[:16]).save(tmp_path / "heart.png")
    with pytest.raises(DatasetError, match=r"heart.png is 32x16, its image is 32x32"):
        load(tmp_path, json.dumps(items), "regions.json")
    with pytest.raises(DatasetError, match=r"regions.json, item 0: needs 'image'"):
        load(tmp_path, json.dumps([{"region": "r", "x": 1, "y": 1, "w": 1, "h": 1}]), "regions.json")
    # two images with one file name in different folders: a file-name key is ambiguous
    (tmp_path / "img" / "sub").mkdir()
    Image.fromarray(mask).save(tmp_path / "img" / "sub" / "a.png")
    (tmp_path / "manifest.csv").write_text("id,image,report\nx,img/a.png,r1\ny,img/sub/a.png,r2\n")
    with pytest.raises(DatasetError, match=r"line 2: 'a.png' names 2 images \(x, y\)"):
        load(tmp_path, "image,region,x,y,w,h\na.png,r,1,1,2,2\n")
    with pytest.raises(DatasetError, match="regions format must be one of"):
        load_region_rows(tmp_path / "regions.csv", "coco")


# -- the phantom's regions -----------------------------------------------------------------------------


def test_the_bundled_phantom_carries_its_regions():
    dataset = load_dataset(None)
    names = dataset.info["regions"]["names"]
    assert {n: names[n] for n in ("heart", "left_lung", "marker", "right_lung")} == dict.fromkeys(
        ("heart", "left_lung", "marker", "right_lung"), 300)
    from pytest_medrobust.datasets.phantom import describe_study

    for i, record in enumerate(dataset.records[:60]):
        kinds = {f.kind for f in describe_study(0, i)[0]}
        assert ("pacemaker" in dataset.regions[record.id]) == ("pacemaker" in kinds)
        assert ("central_line" in dataset.regions[record.id]) == ("central_line" in kinds)
        pixels = np.asarray(Image.open(record.image))
        marker = dataset.regions[record.id]["marker"].original_mask()
        assert pixels[marker].max() >= 240 and marker.mean() < 0.01  # the burnt-in letter, tightly
        for device in kinds & {"pacemaker", "central_line"}:
            on = dataset.regions[record.id][device].original_mask()
            assert pixels[on].mean() > pixels.mean()  # metal is bright


def test_the_phantom_regions_file_is_what_the_generator_writes():
    from pytest_medrobust.datasets import bundled_phantom_manifest

    shipped = (bundled_phantom_manifest().parent / "regions.csv").read_text().splitlines()
    fresh = regions_csv(0, 12, 128).decode().splitlines()
    assert shipped[: len(fresh)] == fresh
    assert study_regions(0, 5, 128) == study_regions(0, 5, 128)



def test_a_limited_phantom_counts_the_regions_of_images_left_out_without_a_warning(recwarn):
    dataset = load_dataset(None, limit=10)
    assert not [w for w in recwarn if issubclass(w.category, RegionWarning)]
    assert len(dataset.regions) == 10 and dataset.info["regions"]["unmatched_rows"] > 0


def test_a_regions_file_that_matches_nothing_of_a_subset_still_warns():
    from pathlib import Path

    from pytest_medrobust.datasets.regions import attach_regions

    dataset = load_dataset(None, limit=10)
    rows, _ = load_region_rows(Path(dataset.source).parent / "regions.csv", "boxes")
    left_out = [r for r in rows if r.key not in dataset.ids][:5]
    assert left_out
    with pytest.warns(RegionWarning, match="5 row"):
        attach_regions(dataset, left_out, "regions.csv", subset=True)
