"""Session fixtures: tiny Hugging Face models and their imports, built once per test session."""

from __future__ import annotations

import pytest

from tests.convert.hf_models import save_hf_model


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory):
    """``hf_model(kind, **config)``: the folder of a tiny random ``kind`` model (built on first
    use; ``config`` overrides fields of the transformers config)."""
    cache = {}

    def get(kind: str, **config):
        key = (kind, tuple(sorted(config.items())))
        if key not in cache:
            cache[key] = save_hf_model(kind, tmp_path_factory.mktemp(f"hf_{kind}"), **config)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def imported(hf_model, tmp_path_factory):
    """``imported(kind)``: ``hf_model(kind)`` imported at TP=1 (world of one, first use)."""
    from nemo_neko.testing.distributed import run_distributed
    from tests.convert.workers import convert

    cache = {}

    def get(kind: str):
        if kind not in cache:
            out = tmp_path_factory.mktemp(f"mg_{kind}") / "ckpt"
            run_distributed(convert, 1, "import", str(hf_model(kind)), str(out), {})
            cache[kind] = out
        return cache[kind]

    return get
