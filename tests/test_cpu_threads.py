"""Torch threads on the CPU follow the CPUs the process may use, not the machine's core count."""

from __future__ import annotations

import os

import pytest
import torch

from pytest_medrobust.runner import _share_cpu_threads, usable_cpus


def cgroup(tmp_path, v2=None, v1=None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return str(tmp_path)


@pytest.mark.parametrize(
    "v2, v1, quota",
    [
        ("150000 100000\n", None, 2),  # docker --cpus 1.5: rounded up
        ("100000 100000\n", None, 1),
        ("max 100000\n", None, None),  # no limit
        (None, ("50000", "100000"), 1),  # cgroup v1
        (None, ("-1", "100000"), None),  # v1, no limit
        ("garbage", None, None),
    ],
)
def test_a_cgroup_cpu_limit_caps_the_usable_cpus(tmp_path, v2, v1, quota):
    cpus = len(os.sched_getaffinity(0))
    assert usable_cpus(cgroup(tmp_path, v2, v1)) == (min(cpus, quota) if quota else cpus)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_one_cpu_container_runs_one_thread_unless_omp_says_otherwise(threads, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    monkeypatch.setattr("pytest_medrobust.runner.usable_cpus", lambda: 1)
    _share_cpu_threads(torch.device("cpu"))
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    _share_cpu_threads(torch.device("cpu"))
    assert torch.get_num_threads() == 2


def test_xdist_workers_split_the_usable_cpus(threads, monkeypatch):
    torch.set_num_threads(8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setattr("pytest_medrobust.runner.usable_cpus", lambda: 8)
    _share_cpu_threads(torch.device("cpu"))
    assert torch.get_num_threads() == 4
