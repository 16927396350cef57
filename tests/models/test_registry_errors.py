"""Issue 12, smaller items: the unknown-model error lists the config's own models; occlusion's
public entry points refuse a level that is not a number. (The level test sits here because the
occlusion tests belong to another owner; it may move to tests/occlusion.)"""

from __future__ import annotations

import pytest
import torch

from pytest_medrobust import occlusion
from pytest_medrobust.errors import ModelLoadError, OcclusionError
from pytest_medrobust.models import ModelSpec, available_models, check_known


def test_unknown_model_lists_registered_and_defined_models():
    defined = {"mine": ModelSpec("mine", factory="mypkg.models:load"), "clip-local": ModelSpec("clip-local")}
    with pytest.raises(ModelLoadError) as err:
        check_known(ModelSpec("mien"), defined)
    msg = str(err.value)
    assert msg.startswith("unknown model 'mien'; registered: ")
    assert all(name in msg for name in available_models())
    assert "; defined in the config: clip-local, mine " in msg
    # without definitions the message lists the registered models only
    with pytest.raises(ModelLoadError) as err:
        check_known(ModelSpec("mien"))
    assert "defined in the config" not in str(err.value) and "registered: " in str(err.value)
    check_known(ModelSpec("clip"), defined)  # known names pass
    check_known(ModelSpec("mine", factory="mypkg.models:load"), defined)


@pytest.mark.parametrize("level", ["0.3", b"0.3", None, True, [0.3], torch.tensor(0.3)])
def test_plan_masks_and_occlude_refuse_a_level_that_is_not_a_number(level):
    with pytest.raises(OcclusionError, match=r"occlusion level must be a number in \[0, 1\), got "):
        occlusion.plan_masks("black_box", level, ["a"], 16, 16, 0)
    with pytest.raises(OcclusionError, match="must be a number"):
        occlusion.occlude(torch.zeros(1, 3, 16, 16), ["a"], "black_box", level, 0)


def test_numbers_of_any_kind_are_levels():
    from fractions import Fraction

    import numpy as np

    masks = [occlusion.plan_masks("black_box", v, ["a"], 16, 16, 0)[0] for v in (0.25, np.float32(0.25), Fraction(1, 4))]
    assert all(m.area == 64 for m in masks)
    assert occlusion.plan_masks("black_box", 0, ["a"], 16, 16, 0)[0].area == 0
