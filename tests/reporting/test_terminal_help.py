"""The option help texts state the true defaults (issue 14: --help once said black_box)."""

import re

from pytest_medrobust import config
from pytest_medrobust.options import OPTIONS


def _default(flag: str) -> str:
    option = next(o for o in OPTIONS if o.flag == flag)
    return re.search(r"\(default: ([^)]*)\)", option.help)[1]


def test_help_texts_give_the_configured_defaults():
    assert _default("--medrobust-patches").split(",") == list(config.DEFAULT_PATCHES)
    assert [float(x) for x in _default("--medrobust-levels").split(",")] == list(config.DEFAULT_LEVELS)
    assert _default("--medrobust-models").split(",") == list(config.DEFAULT_MODELS)
    assert [int(x) for x in _default("--medrobust-k").split(",")] == list(config.DEFAULT_KS)
