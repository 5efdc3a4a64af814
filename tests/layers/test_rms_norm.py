"""RMSNorm for local specs: Megatron's torch RMSNorm numerics, Gemma's (1 + w), SP flag."""

from types import SimpleNamespace

import torch

from nemo_neko.layers import RMSNorm


def config(**kw):
    settings = dict(
        params_dtype=torch.float32, layernorm_zero_centered_gamma=False, sequence_parallel=False
    )
    return SimpleNamespace(**{**settings, **kw})


def test_matches_torch_rms_norm():
    norm = RMSNorm(config(), 16, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(norm(x), torch.nn.functional.rms_norm(x, (16,), norm.weight, 1e-6))


def test_zero_centered_gamma_scales_by_one_plus_weight():
    norm = RMSNorm(config(layernorm_zero_centered_gamma=True), 8, eps=1e-6)
    assert torch.equal(norm.weight, torch.zeros(8)), "starts as the identity gain"
    with torch.no_grad():
        norm.weight.fill_(0.5)
    x = torch.randn(4, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * 1.5
    torch.testing.assert_close(norm(x), expected)


def test_sequence_parallel_marks_the_weight_and_keeps_dtype():
    norm = RMSNorm(config(sequence_parallel=True), 8)
    assert norm.weight.sequence_parallel is True
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    assert norm(x).dtype == torch.bfloat16
