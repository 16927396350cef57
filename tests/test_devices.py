"""Device choice without a GPU: the CUDA paths are exercised with torch.cuda stubbed out; the
CPU == CUDA equality of occlusion runs only where a GPU exists (tests/occlusion)."""

import pytest
import torch

from pytest_medrobust.runner import autocast_dtype, resolve_device


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize("worker, index", [(None, 0), ("gw0", 0), ("gw1", 1), ("gw2", 0), ("gw7", 1)])
def test_each_xdist_worker_gets_a_gpu_round_robin(two_gpus, worker, index):
    assert resolve_device("auto", worker) == torch.device("cuda", index)
    assert resolve_device("cuda", worker) == torch.device("cuda", index)


def test_an_explicit_gpu_is_kept(two_gpus):
    assert resolve_device("cuda:1", "gw0") == torch.device("cuda", 1)


def test_auto_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "gw3") == torch.device("cpu")
    with pytest.raises(Exception, match="CUDA is not available"):
        resolve_device("cuda", None)


def test_fp32_by_default_and_mixed_precision_only_when_asked(two_gpus):
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("auto", torch.device("cuda", 0)) is None
    assert autocast_dtype("bf16", torch.device("cuda", 0)) is torch.bfloat16
    assert autocast_dtype("fp16", torch.device("cuda", 0)) is torch.float16
    assert autocast_dtype("fp32", torch.device("cuda", 0)) is None


def test_auto_worker_count_follows_the_gpus(two_gpus, pytestconfig, monkeypatch):
    from pytest_medrobust.plugin import pytest_xdist_auto_num_workers

    monkeypatch.setattr(pytestconfig.option, "medrobust", True, raising=False)
    assert pytest_xdist_auto_num_workers(pytestconfig) == 2
    monkeypatch.setattr(pytestconfig.option, "medrobust", False)
    assert pytest_xdist_auto_num_workers(pytestconfig) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_grid_cell_matches_cpu_within_autocast_tolerance():
    from pytest_medrobust.datasets import decode_dataset, load_dataset, to_batch
    from pytest_medrobust.models.demo import demo_plain

    dataset = load_dataset()
    out = {}
    for device in ("cpu", "cuda"):
        model = demo_plain(device=device)
        pixels = decode_dataset(dataset, model.input_size, model.geometry)
        with torch.inference_mode():
            out[device] = model.encode_images(to_batch(pixels, slice(0, 64), torch.device(device))).cpu()
    assert torch.allclose(out["cpu"], out["cuda"], atol=1e-4)
