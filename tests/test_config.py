"""Settings parsing: the README's example parses, values of the wrong type are named errors."""

import re
import sys
from pathlib import Path

import pytest

from pytest_medrobust.config import Settings, apply_table, validate_names
from pytest_medrobust.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_configuration_example_is_valid(tmp_path):
    text = README.read_text()
    block = re.search(r"```toml\n(\[tool\.medrobust\]\nmodels = .*?)```", text, re.S).group(1)
    table = tomllib.loads(block)["tool"]["medrobust"]
    settings = apply_table(Settings(), table, "README", tmp_path)
    validate_names(settings)
    assert settings.patches == ("black_box", "grid_cutout(cells=4)")
    assert settings.model_names == ["demo-plain", "mine"]
    assert settings.dataset == str(tmp_path / "data/test.csv")
    assert settings.baseline.path == tmp_path / "baselines/main.json"


@pytest.mark.parametrize(
    "table, message",
    [
        ({"levels": {"a": 1}}, "levels: expected a list"),
        ({"k": True}, "k: expected a list"),
        ({"cache": "false"}, "cache: expected true or false"),
        ({"seed": 1.5}, "seed: 1.5 is not an integer"),
        ({"search": {"enabled": "no"}}, "search.enabled: expected true or false"),
        ({"models": 5}, "models: expected a list"),
        ({"precision": "fp8"}, "precision: must be one of auto, fp32, bf16, fp16"),
        ({"bootstrap": {"confidence": 2}}, "bootstrap.confidence: must be in"),
    ],
)
def test_wrong_types_are_named(table, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_table(Settings(), table, "cfg.toml")


def test_a_threshold_on_an_unmeasured_k_is_caught_before_the_run():
    settings = apply_table(Settings(), {"k": [1, 10]}, "cfg.toml")
    with pytest.raises(ConfigError, match=r"primary_metric 'i2t_unique_R@5' is not measured with k = \[1, 10\]"):
        validate_names(settings)
    settings = apply_table(settings, {"primary_metric": "i2t_unique_R@1"}, "cfg.toml")
    with pytest.raises(ConfigError, match=r"thresholds: 'i2t_unique_R@5' is not measured"):
        validate_names(settings)


def test_lower_bound_gate_needs_the_bootstrap():
    settings = apply_table(Settings(), {"thresholds": {"gate": "lower"}, "bootstrap": 0}, "cfg.toml")
    with pytest.raises(ConfigError, match="needs bootstrap intervals"):
        validate_names(settings)
