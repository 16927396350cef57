"""Hostile or careless inputs: each gives one clear error (or a recorded bad row), never a
traceback, and never runs code or reads data the user did not allow.

* String booleans in model options (issue 11, item 8): ``trust_pickle = "false"`` is truthy in
  Python; it must be refused, not read as "trust this pickle".
* Dataset rows that used to escape the bad-row policy (item 12): a decompression-bomb PNG, a
  symlink loop, a CSV field over 128 KB.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pytest_medrobust.runner  # noqa: F401 - the same, for everything the grid imports
from pytest_medrobust.datasets import load_manifest
from pytest_medrobust.errors import DatasetError, ModelLoadError

# --- item 8: model booleans ----------------------------------------------------------------------


class _MakesMarker:
    """Unpickling this calls ``os.mkdir(marker)``: proof that a pickle ran code, without a shell."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """(a ``.pt`` file that creates ``marker`` when fully unpickled, the marker path)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _MakesMarker(marker)}, path)  # torch's own format, as a real .pt
    return path, marker


def _factories():
    from pytest_medrobust.models.clip import load_clip
    from pytest_medrobust.models.cxr_clip import load_cxr_clip
    from pytest_medrobust.models.cxr_repair import load_cxr_repair
    from pytest_medrobust.models.medclip import load_medclip

    return {
        "clip": lambda path, **kw: load_clip(model_name="ViT-B-32", pretrained=str(path), **kw),
        "cxr-repair": lambda path, **kw: load_cxr_repair(checkpoint=str(path), **kw),
        "medclip": lambda path, **kw: load_medclip(checkpoint=str(path), **kw),
        "cxr-clip": lambda path, **kw: load_cxr_clip(checkpoint=str(path), **kw),
    }


def test_the_crafted_checkpoint_does_run_code_when_trusted(tmp_path):
    """Control: the file really is malicious (so the refusals below mean something)."""
    from pytest_medrobust.models.hub import load_checkpoint_file

    path, marker = _malicious_checkpoint(tmp_path)
    load_checkpoint_file(path, model="m", trust_pickle=True)
    assert marker.is_dir()


@pytest.mark.parametrize("model", ["clip", "cxr-repair", "medclip", "cxr-clip"])
@pytest.mark.parametrize("value", ["false", "no", "False", 0, 1, "true", None])
def test_string_or_number_trust_pickle_is_refused_and_nothing_is_unpickled(tmp_path, model, value):
    path, marker = _malicious_checkpoint(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        _factories()[model](path, trust_pickle=value, name=model)
    message = str(info.value)
    assert message.startswith(f"{model}: option trust_pickle must be a boolean"), message
    assert repr(value) in message
    assert not marker.exists()


def test_load_checkpoint_file_itself_refuses_a_string_trust_pickle(tmp_path):
    from pytest_medrobust.models.hub import load_checkpoint_file

    path, marker = _malicious_checkpoint(tmp_path)
    with pytest.raises(ModelLoadError, match=r"m: option trust_pickle must be a boolean .*'false'"):
        load_checkpoint_file(path, model="m", trust_pickle="false")  # type: ignore[arg-type]
    assert not marker.exists()


@pytest.mark.parametrize("value", ["false", "no", "true", 0])
def test_clip_quick_gelu_must_be_a_boolean(tmp_path, value):
    from pytest_medrobust.models.clip import load_clip

    with pytest.raises(ModelLoadError, match=r"^my-clip: option quick_gelu must be a boolean"):
        load_clip(model_name="ViT-B-32", pretrained="none", quick_gelu=value, name="my-clip")


def test_trust_pickle_string_from_the_config_stops_the_run_with_one_message(pytester, tmp_path):
    """End to end: the TOML string reaches the adapter, which refuses it; exit 4, no unpickling."""
    from tests.plugin.fakes import write_dataset

    path, marker = _malicious_checkpoint(pytester.path)
    write_dataset(pytester.path)
    factory = "pytest_medrobust.models.cxr_repair:load_cxr_repair"
    options = f'{{checkpoint = "{path}", trust_pickle = "false"}}'
    pytester.makefile(
        ".toml",
        pyproject=f"""
[tool.medrobust]
models = [{{name = "repair", factory = "{factory}", options = {options}}}]
dataset = "manifest.csv"
levels = [0.0, 0.1]
patches = ["black_box"]
device = "cpu"
search = {{enabled = false}}
""",
    )
    result = pytester.runpytest("--medrobust-only", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert err.count("option trust_pickle must be a boolean (true or false), got 'false' (str)") == 1, err
    assert "repair: option trust_pickle" in err  # the name the user gave the model, not the adapter's
    assert "Traceback" not in err + result.stdout.str()
    assert not marker.exists()


# --- item 12: rows that used to escape the bad-row policy -----------------------------------------


def _bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels: a few hundred KB for 20,000^2."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    squeeze = zlib.compressobj(9)
    data = b"".join(squeeze.compress(row * 500) for _ in range(height // 500)) + squeeze.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _manifest(root: Path, reports: dict[int, str] | None = None, n: int = 4, suffix: str = ".csv") -> Path:
    """``root/m.csv`` (or ``.jsonl``) with n small PNGs ``img/<i>.png``; ``reports`` overrides row i's report."""
    (root / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(np.full((24, 24), 20 * i, np.uint8)).save(root / "img" / f"{i}.png")
        rows.append({"id": f"r{i}", "image": f"img/{i}.png", "report": (reports or {}).get(i, f"report {i}")})
    path = root / f"m{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text("id,image,report\n" + "".join(f'{r["id"]},{r["image"]},"{r["report"]}"\n' for r in rows))
    return path


def _bad_rows(manifest: Path, **options) -> tuple[str, dict]:
    """(the error of on_bad_rows=error, the info of on_bad_rows=drop)."""
    with pytest.raises(DatasetError) as info:
        load_manifest(manifest, **options)
    dataset = load_manifest(manifest, on_bad_rows="drop", **options)
    return str(info.value), dataset.info


def test_decompression_bomb_png_is_a_bad_row(tmp_path):
    manifest = _manifest(tmp_path)
    bomb = _bomb_png(20_000, 20_000)
    assert len(bomb) < 1_000_000  # small on disk, 400 M pixels decoded
    (tmp_path / "img" / "1.png").write_bytes(bomb)
    error, info = _bad_rows(manifest)
    assert "1 problem(s)" in error
    assert "m.csv, line 3: cannot decode image" in error and "1.png: 400,000,000 pixels, over the limit of 89,478,485" in error
    assert info["n_dropped"] == 1 and info["dropped"][0]["id"] == "r1"
    assert "400,000,000 pixels" in info["dropped"][0]["reason"]


def test_decompression_bomb_is_a_bad_row_when_images_are_decoded_after_validate_exists(tmp_path):
    """validate="exists" reads no pixels while loading; the bomb is met when the grid decodes."""
    from pytest_medrobust.datasets import decode_dataset

    manifest = _manifest(tmp_path)
    (tmp_path / "img" / "1.png").write_bytes(_bomb_png(20_000, 20_000))
    dataset = load_manifest(manifest, validate="exists")
    # Pillow refuses past twice its limit at open, our header check below that: both are bad rows.
    with pytest.raises(DatasetError, match=r"m\.csv, line 3: cannot decode .*1\.png: .*400,?000,?000 pixels.*decompression bomb"):
        decode_dataset(dataset, (32, 32), "pad")


def test_image_just_over_the_pixel_limit_is_refused_even_where_pillow_only_warns(tmp_path):
    """10,000 x 9,000 is past the limit but under twice Pillow's (where Pillow only warns)."""
    manifest = _manifest(tmp_path)
    (tmp_path / "img" / "2.png").write_bytes(_bomb_png(10_000, 9_000))
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow's own warning, not ours to silence
        error, info = _bad_rows(manifest)
    assert "m.csv, line 4: cannot decode image" in error and "10000 x 9000 = 90,000,000 pixels" in error
    assert [d["id"] for d in info["dropped"]] == ["r2"]


def test_dicom_claiming_too_many_pixels_is_refused_before_its_pixels_are_allocated(tmp_path):
    pytest.importorskip("pydicom")
    from pytest_medrobust.datasets.dicom import read_dicom
    from tests.datasets.dataset_builders import write_dicom

    path = write_dicom(tmp_path / "x.dcm", np.zeros((4, 4), np.uint8))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 30_000, 30_000  # the header lies; pixel_array would allocate 900 M values
    ds.save_as(path)
    with pytest.raises(DatasetError, match=r"x\.dcm: 30000 x 30000 = 900,000,000 pixels, over the limit"):
        read_dicom(path)


def test_symlink_loop_is_a_bad_row_named_as_such(tmp_path):
    manifest = _manifest(tmp_path)
    (tmp_path / "img" / "3.png").unlink()
    (tmp_path / "img" / "3.png").symlink_to("3.png")
    for validate in ("decode", "exists"):
        error, info = _bad_rows(manifest, validate=validate)
        assert f"m.csv, line 5: image path {tmp_path / 'img' / '3.png'} is a symlink loop" in error
        assert [d["where"] for d in info["dropped"]] == ["m.csv, line 5"]


def test_symlink_loop_in_a_chexpert_csv_is_a_bad_row(tmp_path):
    from pytest_medrobust.datasets.chexpert import load_chexpert5x200
    from tests.datasets.dataset_builders import build_chexpert

    root = build_chexpert(tmp_path, per_class=1, one_hot=False)
    (root / "loop").symlink_to("loop")
    with open(root / "chexpert_5x200.csv", "a") as f:
        f.write("loop/x.jpg,Edema\n")
    with pytest.raises(DatasetError, match=r"chexpert_5x200\.csv, line 7: cannot resolve image path 'loop/x\.jpg'"):
        load_chexpert5x200(root)
    dataset = load_chexpert5x200(root, on_bad_rows="drop")
    assert len(dataset.records) == 5 and dataset.info["dropped"][0]["where"] == "chexpert_5x200.csv, line 7"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_field_over_128_kb_is_a_bad_row_and_later_rows_still_load(tmp_path, suffix):
    manifest = _manifest(tmp_path, {1: "x" * 140_000}, suffix=suffix)
    error, info = _bad_rows(manifest)
    where = f"m{suffix}, line {3 if suffix == '.csv' else 2}"  # a CSV's line 1 is its header
    assert f"{where}: column 'report' holds 140,000 characters, over the limit of 131,072" in error
    assert "1 problem(s)" in error
    assert [d["where"] for d in info["dropped"]] == [where]
    assert info["n_rows_available"] == 4  # the rows after the long field were read


def test_field_over_128_kb_in_a_chexpert_csv_is_a_bad_row(tmp_path):
    from pytest_medrobust.datasets.chexpert import load_chexpert5x200
    from tests.datasets.dataset_builders import build_chexpert

    root = build_chexpert(tmp_path, per_class=1, one_hot=False)
    with open(root / "chexpert_5x200.csv", "a") as f:
        f.write(f'"{"y" * 140_000}",Edema\n')
    with pytest.raises(DatasetError, match=r"line 7: column 'Path' holds 140,000 characters"):
        load_chexpert5x200(root)
    assert load_chexpert5x200(root, on_bad_rows="drop").info["n_dropped"] == 1


def test_field_over_128_kb_in_the_mimic_split_file_is_a_bad_row(tmp_path):
    import gzip

    from pytest_medrobust.datasets.mimic import load_mimic_cxr
    from tests.datasets.dataset_builders import build_mimic

    root = build_mimic(tmp_path / "mimic")
    split = root / "mimic-cxr-2.0.0-split.csv.gz"
    text = gzip.decompress(split.read_bytes()).decode() + f"{'z' * 140_000},50414267,10000032,test\n"
    split.write_bytes(gzip.compress(text.encode()))
    n_lines = text.count("\n")
    with pytest.raises(DatasetError, match=rf"line {n_lines}: column 'dicom_id' holds 140,000 characters"):
        load_mimic_cxr(root)
    assert load_mimic_cxr(root, on_bad_rows="drop").info["n_dropped"] == 1


def test_bad_rows_in_a_gate_run_stop_it_with_one_message_and_exit_4(pytester):
    """The three rows together through the plugin: no traceback, each row listed once."""
    from tests.plugin.conftest import PYPROJECT
    from tests.plugin.fakes import MODELS, write_dataset

    pytester.makepyfile(fakemodels=MODELS)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    manifest = write_dataset(pytester.path, n=8)
    (pytester.path / "img" / "001.png").write_bytes(_bomb_png(20_000, 20_000))
    (pytester.path / "img" / "002.png").unlink()
    (pytester.path / "img" / "002.png").symlink_to("002.png")
    lines = manifest.read_text().splitlines()
    lines[4] = f'case003,img/003.png,"{"w" * 140_000}"'
    manifest.write_text("\n".join(lines) + "\n")
    result = pytester.runpytest("--medrobust-only", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "Traceback" not in err + result.stdout.str() and "INTERNALERROR" not in err + result.stdout.str()
    assert "3 problem(s)" in err
    for line in ("manifest.csv, line 3:", "manifest.csv, line 4:", "manifest.csv, line 5:"):
        assert err.count(line) == 1, err
    dropped = pytester.runpytest("--medrobust-only", "--medrobust-on-bad-rows=drop", "-p", "no:cacheprovider")
    assert dropped.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    results = json.loads((pytester.path / "reports" / "medrobust.json").read_text())
    reasons = [d["reason"] for d in results["dataset"]["dropped"]]
    assert len(reasons) == 3 and any("pixels" in r for r in reasons) and any("symlink loop" in r for r in reasons)
