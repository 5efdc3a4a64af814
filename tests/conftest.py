"""Test-suite plumbing: GPU markers skip cleanly on machines without CUDA; no test may set up
the parallel state (and the CPU shims) in pytest's own process."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_multi = pytest.mark.skip(reason="needs two or more CUDA GPUs")
    for item in items:
        if "gpu" in item.keywords and gpus < 1:
            item.add_marker(skip_gpu)
        if "multi_gpu" in item.keywords and gpus < 2:
            item.add_marker(skip_multi)


@pytest.fixture(autouse=True)
def _no_parallel_state_in_the_pytest_process():
    """Megatron's parallel state and the CPU shims belong in worker processes
    (:func:`nemo_neko.testing.distributed.run_distributed`, subprocesses): set up in pytest's own
    process they patch torch for every later test of the session (the cause of HF-logits
    failures that depended on test order)."""
    yield
    from nemo_neko.compat import cpu

    assert not cpu._APPLIED, "this test set up the parallel state in pytest's own process"
