"""The CPU allocator setting: glibc keeps a forward pass's freed activations for the next batch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pytest_medrobust.allocator import _glibc, tune_cpu_allocator
from pytest_medrobust.config import Settings, apply_table
from pytest_medrobust.errors import ConfigError

GLIBC = _glibc() is not None

# One process per mode (mallopt is process-wide): the runner picks the CPU, then a 64 MiB
# tensor is allocated, written and freed ten times, and the minor page faults are counted.
PROBE = """
import json, resource, sys, torch
from pytest_medrobust.config import Settings
from pytest_medrobust.runner import GridRunner
runner = GridRunner(Settings(device="cpu", cpu_allocator=sys.argv[1]))
runner.device
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):  # the heap settles around the block (measured: the 1st, 2nd and 4th fault)
    torch.empty(16 << 20).fill_(1.0)
before = faults()
for _ in range(10):
    torch.empty(16 << 20).fill_(1.0)
print(json.dumps({"allocator": runner.allocator, "faults": faults() - before}))
"""


def probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere the setting changes nothing (tested below)")
def test_tuned_reuses_freed_activations_and_system_does_not():
    tuned, system = probe("tuned"), probe("system")
    pages = (64 << 20) // 4096
    assert tuned["allocator"].startswith("glibc malloc, mmap and trim thresholds")
    assert system["allocator"] == "system malloc"
    # glibc's default mmaps a 64 MiB block afresh every time: 10 x 16,384 page faults.
    assert system["faults"] > 8 * pages
    assert tuned["faults"] < pages // 2


def test_elsewhere_nothing_changes_and_says_so(monkeypatch):
    import pytest_medrobust.allocator as allocator

    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    allocator._raise_thresholds.cache_clear()
    try:
        assert tune_cpu_allocator("tuned") == "system malloc (not glibc: no mallopt)"
    finally:
        allocator._raise_thresholds.cache_clear()


def test_an_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="tuned, system"):
        tune_cpu_allocator("fast")


@pytest.mark.parametrize("value", ["fast", "", True, 1, "Tuned"])
def test_a_bad_config_value_names_the_key(tmp_path, value):
    with pytest.raises(ConfigError, match=r"pyproject\.toml: cpu_allocator: must be one of tuned, system"):
        apply_table(Settings(), {"cpu_allocator": value}, "pyproject.toml", tmp_path)


def test_the_setting_reaches_the_results_json(tmp_path):
    settings = apply_table(Settings(), {"cpu_allocator": "system"}, "pyproject.toml", tmp_path)
    assert settings.cpu_allocator == "system"
    assert Settings().to_json()["cpu_allocator"] == "tuned"
    assert settings.to_json()["cpu_allocator"] == "system"
