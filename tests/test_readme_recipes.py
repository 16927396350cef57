"""The README's own-model and own-dataset recipes, pasted into an empty folder, run to a report.

The code blocks are read out of README.md (so this fails when the README drifts): the
``mypkg/models.py`` block, the project's ``pyproject.toml`` block, the manifest's columns and
the first ``pytest`` command of "Plugging in a dataset". The manifest names its images by
ABSOLUTE paths in another folder (images on a share, the manifest in the project). The run is a
fresh ``pytest`` process with the embedding cache on; a second run reads every cell from it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parent.parent / "README.md"
REPORTS = [
    "FINDINGS: Heart size normal. Lungs are clear. IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Small left pleural effusion. IMPRESSION: Small left effusion.",
    "FINDINGS: Moderate cardiomegaly. IMPRESSION: Enlarged heart, no edema.",
    "FINDINGS: Right apical pneumothorax. IMPRESSION: Small right pneumothorax.",
]


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def block_starting(text: str, language: str, first_line: str) -> str:
    found = [b for b in blocks(text, language) if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"README.md: expected one {language} block starting with {first_line!r}"
    return found[0]


@pytest.fixture(scope="module")
def recipes() -> dict[str, str | list[str]]:
    text = README.read_text(encoding="utf-8")
    model, dataset = section(text, "Plugging in a model"), section(text, "Plugging in a dataset")
    command = blocks(dataset, "bash")[0].splitlines()[0]
    args = shlex.split(command)
    assert args[0] == "pytest", command
    return {
        "models.py": block_starting(model, "python", "# mypkg/models.py"),
        "pyproject.toml": block_starting(model, "toml", "# pyproject.toml of the project under test"),
        "csv_header": blocks(dataset, "csv")[0].splitlines()[0],
        "args": args[1:],
    }


def write_share(share: Path, n: int = 8) -> list[Path]:
    """Grayscale PNGs of different sizes whose content follows their report (so retrieval has
    something to find), in a folder outside the project."""
    share.mkdir(parents=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        h, w = 200 + 17 * i, 240 - 9 * i
        arr = rng.normal(60 + 40 * (i % len(REPORTS)), 12, (h, w)).clip(0, 255).astype(np.uint8)
        path = share / f"study{i:02d}.png"
        Image.fromarray(arr, mode="L").save(path)
        paths.append(path)
    return paths


def test_own_model_and_dataset_recipes_run_from_an_empty_folder(recipes, pytester: pytest.Pytester, tmp_path_factory):
    project = pytester.path
    assert not any(project.iterdir())  # an empty folder
    (project / "mypkg").mkdir()
    (project / "mypkg" / "models.py").write_text(str(recipes["models.py"]))
    (project / "pyproject.toml").write_text(str(recipes["pyproject.toml"]))
    images = write_share(tmp_path_factory.mktemp("share") / "cxr")
    manifest = project / "data" / "test.csv"
    manifest.parent.mkdir()
    header = str(recipes["csv_header"]).split(",")
    assert header == ["id", "image", "report"], header
    lines = [",".join(header)] + [f'r{i},{p},"{REPORTS[i % len(REPORTS)]}"' for i, p in enumerate(images)]
    manifest.write_text("\n".join(lines) + "\n")
    args = list(recipes["args"])
    assert f"--medrobust-dataset={manifest.relative_to(project)}" in args

    cold = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider", timeout=600)
    out = cold.stdout.str()
    assert cold.ret in (0, 1), out  # 1: the gate failed cells (a random model), not an error
    outcomes = cold.parseoutcomes()
    assert "error" not in outcomes and "errors" not in outcomes, out
    assert "cannot import factory" not in out and "not cached" not in out
    results = json.loads((project / "reports" / "medrobust.json").read_text())
    assert results["summary"]["verdict"] in ("pass", "fail")
    assert results["models"]["mine"]["factory"] == "mypkg.models:load"
    assert results["dataset"]["n_images"] == len(images)
    assert (project / "reports" / "medrobust.html").is_file()
    cells = results["cells"]
    # Cold: no grid cell read the cache (a search cell may: its first, explicit placement is the
    # grid cell's own, measured minutes earlier in this run).
    assert cells and not any(c["cached"] for c in cells if c["kind"] == "grid")
    assert list((project / ".medrobust_cache").rglob("*.safetensors"))

    warm = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider", timeout=600)
    assert warm.ret == cold.ret
    again = json.loads((project / "reports" / "medrobust.json").read_text())["cells"]
    grid = [c for c in again if c["kind"] == "grid"]
    assert grid and all(c["cached"] for c in grid)
    assert [c["metrics"] for c in again] == [c["metrics"] for c in cells]
