"""Fault injection, models: outputs that are not embeddings and unusable ``input_size`` values
are refused with one message naming the model and what it returned (issue 11, items 6 and 11),
never ranked as if they were embeddings nor shown as a traceback per cell."""

import numpy  # noqa: F401 - loaded before pytester's runs: C extensions cannot be imported twice
import PIL.Image  # noqa: F401
import pytest
import torch

import pytest_medrobust.runner  # noqa: F401
from pytest_medrobust.errors import ModelLoadError
from pytest_medrobust.runner import check_output
from tests.plugin.fakes import MODELS, make_project

USAGE = pytest.ExitCode.USAGE_ERROR

BAD_MODELS = '''

import numpy as np


class NumpyOut(Oracle):
    def encode_images(self, x):
        return super().encode_images(x).numpy()


class ThreeD(Oracle):
    def encode_texts(self, texts):
        return super().encode_texts(texts)[:, None, :]


class TooFewRows(Oracle):
    def encode_images(self, x):
        return super().encode_images(x)[:-1]


class ExtraTextRow(Oracle):
    """One extra row per text batch: reads as 'not robust' if taken at face value."""

    def encode_texts(self, texts):
        e = super().encode_texts(texts)
        return torch.cat([e, e[:1]])


class ExtraRowInBigBatches(Oracle):
    """Misbehaves only on batches of more than two texts: past the set-up check, caught per batch."""

    def encode_texts(self, texts):
        e = super().encode_texts(texts)
        return torch.cat([e, e[:1]]) if len(texts) > 2 else e


class WrongWidth(Oracle):
    def encode_texts(self, texts):
        return torch.cat([super().encode_texts(texts)] * 2, dim=1)


class IntegerOut(Oracle):
    def encode_images(self, x):
        return super().encode_images(x).long()


class ZeroSide(Oracle):
    input_size = (0, 64)


class StringSize(Oracle):
    input_size = "64x64"


class RaisesInTexts(Oracle):
    def encode_texts(self, texts):
        raise RuntimeError("tokenizer exploded")


def make(cls):
    return lambda device, **options: cls(device)


numpy_out, three_d, too_few_rows = make(NumpyOut), make(ThreeD), make(TooFewRows)
extra_text_row, extra_row_in_big_batches = make(ExtraTextRow), make(ExtraRowInBigBatches)
wrong_width, integer_out, zero_side, string_size = make(WrongWidth), make(IntegerOut), make(ZeroSide), make(StringSize)
raises_in_texts = make(RaisesInTexts)
'''

PYPROJECT = """
[tool.pytest.ini_options]
pythonpath = ["."]

[tool.medrobust]
dataset = "manifest.csv"
levels = [0.0, 0.5]
patches = ["black_box"]
device = "cpu"
batch_size = 8
search = {enabled = false}
"""


@pytest.fixture
def project(pytester: pytest.Pytester):
    return make_project(pytester, PYPROJECT, models=MODELS + BAD_MODELS, n=12)


def run_model(project, factory, *args):
    project.makefile(".toml", gate=f"models = [{{name = 'bad', factory = 'fakemodels:{factory}'}}]\n")
    return project.runpytest("--medrobust-only", "--medrobust-config", "gate.toml", "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize(
    "factory, message",
    [
        ("numpy_out", "model 'bad': encode_images returned a numpy.ndarray of shape (2, 8), dtype float32 for 2 inputs"),
        ("three_d", "model 'bad': encode_texts returned a torch.Tensor of shape (2, 1, 8), dtype torch.float32 on cpu"),
        ("too_few_rows", "model 'bad': encode_images returned a torch.Tensor of shape (1, 8), dtype torch.float32"),
        (
            "extra_text_row",
            "model 'bad': encode_texts returned a torch.Tensor of shape (3, 8), dtype torch.float32 on cpu for 2 inputs "
            "(3 rows for 2 inputs)",
        ),
        ("wrong_width", "model 'bad': encode_images returned 8-wide embeddings and encode_texts 16-wide ones"),
        (
            "integer_out",
            "model 'bad': encode_images returned a torch.Tensor of shape (2, 8), dtype torch.int64 on cpu for 2 inputs "
            "(not a floating-point dtype)",
        ),
        ("zero_side", "model 'bad': input_size must be (height, width), two integers from 1 to 16384; got (0, 64) (tuple)"),
        ("string_size", "model 'bad': input_size must be (height, width), two integers from 1 to 16384; got '64x64' (str)"),
        ("raises_in_texts", "model 'bad': encode_texts raised RuntimeError: tokenizer exploded"),
    ],
)
def test_a_broken_model_is_one_setup_error_naming_it(project, factory, message):
    result = run_model(project, factory)
    err = result.stderr.str()
    assert result.ret == USAGE, err
    assert err.count(message) == 1, err
    assert "set-up error, no cell was measured" in err
    assert "Traceback" not in err + result.stdout.str()
    assert "dataset" not in err.split(message)[1].split("\n")[0]  # not blamed on the dataset


def test_a_model_broken_only_on_big_batches_errors_its_cells_not_fails_them(project):
    """Past the set-up check (2 inputs), every batch is still checked: the cells error (exit 4)
    and name the model; no cell passes or fails on embeddings with an extra row."""
    result = run_model(project, "extra_row_in_big_batches")
    out = result.stdout.str()
    assert result.ret == USAGE, out
    assert "gate ERROR: 0 passed, 0 failed, 2 errors of 2 cells" in out
    assert "model 'bad': encode_texts returned a torch.Tensor of shape (9, 8), dtype torch.float32 on cpu for 8 inputs" in out
    assert "Traceback" not in out


def test_outputs_on_any_device_and_any_float_dtype_are_accepted():
    for value in (torch.zeros(3, 4, device="meta"), torch.zeros(3, 4, dtype=torch.bfloat16), torch.zeros(3, 4).double()):
        assert check_output("m", "encode_images", value, 3) is value
    list_message = r"model 'm': encode_texts returned a list of 3 items for 3 inputs \(not a torch.Tensor\)"
    with pytest.raises(ModelLoadError, match=list_message):
        check_output("m", "encode_texts", [1.0, 2.0, 3.0], 3)
    with pytest.raises(ModelLoadError, match=r"model 'm': encode_texts returned None for 3 inputs"):
        check_output("m", "encode_texts", None, 3)
