"""The dry run's memory plan: ``cluster.gpu`` / ``cluster.gpu_memory_gib``, the table, the
fit check, frozen parameters of the embedded default."""

import re

import pytest

from nemo_neko.config import ConfigError, to_run_config
from tests.launch.test_config import compose_config
from tests.launch.test_models import dry_run

TOTAL = re.compile(r"distributed optimizer\s+([\d.]+) GiB(\*?)")


def test_the_gpu_presets_and_the_override_give_its_memory():
    def run(*overrides):
        return to_run_config(compose_config(["model=8x7b", "cluster=slurm", *overrides]))

    assert run().cluster.gpu_memory_bytes is None
    assert run("cluster.gpu=h100").cluster.gpu_memory_bytes == 80 * 1024**3
    assert run("cluster.gpu=h200").cluster.gpu_memory_bytes == 141 * 1024**3
    assert run("cluster.gpu=h200", "cluster.gpu_memory_gib=130").cluster.gpu_memory_bytes == (
        130 * 1024**3
    )
    with pytest.raises(ConfigError, match="gpu_memory_gib must be > 0"):
        run("cluster.gpu_memory_gib=-1")
    with pytest.raises(Exception, match="gpu"):
        run("cluster.gpu=a100")


@pytest.mark.parametrize("model", ["8x7b", "8x22b"])
def test_the_mixtral_recipes_fit_an_h100_and_warn_on_a_smaller_gpu(capsys, tmp_path, model):
    out = dry_run(capsys, tmp_path, model, "slurm", "cluster.gpu=h100")
    assert "memory per GPU (estimate" in out and "WARNING" not in out
    total, mark = TOTAL.search(out).groups()
    assert mark == "*" and 50 < float(total) < 80  # the run's setting: distributed, no recompute
    assert re.search(rf"GPU h100: 80.0 GiB; the run's setting needs {total} GiB", out)
    small = dry_run(capsys, tmp_path, model, "slurm", "cluster.gpu_memory_gib=40")
    warning = [line for line in small.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "full recompute" in warning[0]


def test_the_embedded_default_counts_its_frozen_layers(capsys, tmp_path):
    out = dry_run(capsys, tmp_path, "smollm2", "local")
    # SmolLM2 fine-tunes its top 4 of 30 layers: the embeddings and layers 0-25 are frozen,
    # and keep no activations (no gradient flows into them)
    assert re.search(r"30 layers, 0\.\d+B parameters \(0\.1\d\dB frozen\)", out)
    assert "4 layer passes of 2 x 512 tokens in flight" in out
