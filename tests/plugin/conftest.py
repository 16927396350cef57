import json

# pytester's in-process runs drop modules first imported during a run; C extensions cannot be
# imported twice, so load them before any run.
import numpy  # noqa: F401
import PIL.Image  # noqa: F401
import pytest
import torch  # noqa: F401

import pytest_medrobust.runner  # noqa: F401

from .fakes import make_project

PYPROJECT = """
[tool.pytest.ini_options]
pythonpath = ["."]

[tool.medrobust]
models = [
  {name = "oracle", factory = "fakemodels:oracle"},
  {name = "constant", factory = "fakemodels:constant"},
]
dataset = "manifest.csv"
levels = [0.0, 0.1, 0.5]
patches = ["black_box"]
device = "cpu"
search = {enabled = false}

[tool.medrobust.thresholds]
min = {"i2t_unique_R@1" = 0.5}
retention = {"i2t_unique_R@1" = 0.8}
"""


@pytest.fixture
def project(pytester: pytest.Pytester):
    """A folder with a small dataset, fake models and a [tool.medrobust] config."""
    return make_project(pytester, PYPROJECT)


def read_results(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "reports" / "medrobust.json").read_text())
