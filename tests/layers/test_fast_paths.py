"""The CPU fast paths compute what Megatron's own modules compute (gloo, one rank):

* SDPA core attention == Megatron's unfused ``DotProductAttention``: a packed batch with its
  block-diagonal mask, grouped-query attention, outputs and every gradient; and greedy
  generation with the KV cache gives the same tokens;
* grouped-GEMM experts == ``SequentialMLP``: outputs and gradients, gated and plain activations,
  experts that receive no token;
* the output layer on the loss positions only == the full logits: per-token losses and every
  gradient;
* the foreach gradient clipping of the CPU shims == Megatron's per-tensor fallbacks.
"""

import numpy as np
import pytest
import torch

from nemo_neko.testing.distributed import run_distributed

SEGMENTS = np.array([[0] * 5 + [1] * 7 + [2] * 4, [0] * 9 + [1] * 3 + [-1] * 4])


def packed_batch(vocab: int = 100) -> dict:
    """Two packed rows of three and two samples (the second ending in padding)."""
    positions = np.concatenate(
        [
            np.concatenate([np.arange((row == s).sum()) for s in dict.fromkeys(row)])
            for row in SEGMENTS
        ]
    ).reshape(SEGMENTS.shape)
    ids = np.random.RandomState(0).randint(3, vocab, size=SEGMENTS.shape)
    return {
        "input_ids": ids,
        "position_ids": positions,
        "segment_ids": SEGMENTS,
        "labels": np.roll(ids, -1, 1),
        "loss_mask": (SEGMENTS >= 0).astype(np.float32),
        "task_ids": np.where(SEGMENTS >= 0, SEGMENTS, -1),
    }


def model_config(**overrides):
    from nemo_neko.model.config import ModelConfig

    settings = dict(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        num_query_groups=2,  # grouped-query attention
        ffn_hidden_size=128,
        moe_ffn_hidden_size=64,
        vocab_size=128,
        transformer_impl="local",
    )
    return ModelConfig(**{**settings, **overrides})


def loss_and_grads(parallel, model, batch, *, selected: bool = False):
    """Per-token losses ``[B, L]`` (selected positions only when ``selected``) and gradients."""
    from nemo_neko.model.output_positions import (
        gather_selected,
        output_positions_scope,
        selected_positions,
    )
    from nemo_neko.moe.config import TaskRoutingConfig
    from nemo_neko.moe.task_context import task_routing_scope
    from nemo_neko.train.step import batch_to_tensors

    torch.manual_seed(0)
    routing = TaskRoutingConfig(task_to_expert=[1, 2, 3])
    (gpt,) = model.build(routing=routing, parallel=parallel, max_sequence_length=64).chunks
    gpt.train()
    t = batch_to_tensors(batch, torch.device("cpu"), packed_attention=False)
    chosen = selected_positions(t["loss_mask"]) if selected else None
    labels = gather_selected(t["labels"], chosen) if selected else t["labels"]
    with task_routing_scope(t["task_ids"], num_tasks=3), output_positions_scope(chosen):
        loss = gpt(t["input_ids"], t["position_ids"], t["attention_mask"], labels=labels)
    weights = gather_selected(t["loss_mask"], chosen) if selected else t["loss_mask"]
    (loss * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in gpt.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _check_attention(rank, world_size):
    from nemo_neko.parallel import ParallelLayout, initialize_parallel

    parallel = initialize_parallel(ParallelLayout(), num_experts=8)
    batch = packed_batch()
    ref_loss, ref_grads = loss_and_grads(parallel, model_config(local_attention="megatron"), batch)
    loss, grads = loss_and_grads(parallel, model_config(local_attention="sdpa"), batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) > 20
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_sdpa_attention_equals_megatron_attention_on_a_packed_batch():
    run_distributed(_check_attention, 1)


def _check_generation(rank, world_size):
    from nemo_neko.inference.generate import KVCacheDecoder
    from nemo_neko.moe.config import TaskRoutingConfig
    from nemo_neko.parallel import ParallelLayout, initialize_parallel
    from nemo_neko.testing.models import build_tiny_gpt, tiny_moe_config

    initialize_parallel(ParallelLayout(), num_experts=8)
    config = tiny_moe_config(
        hidden_size=64, ffn_hidden_size=128, moe_ffn_hidden_size=64, num_query_groups=2
    )
    models = {}
    for attention in ("megatron", "sdpa"):
        torch.manual_seed(0)
        models[attention] = build_tiny_gpt(
            config, TaskRoutingConfig(task_to_expert=[0]), vocab_size=64, local_attention=attention
        ).eval()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 64, (n,), generator=gen).tolist() for n in (5, 9, 12, 3)]
    limits = [10, 4, 12, 16]
    outputs = {
        name: [g.tokens for g in KVCacheDecoder(m, eos_id=2, pad_id=0).generate(prompts, limits, 4)]
        for name, m in models.items()
    }
    assert outputs["sdpa"] == outputs["megatron"]
    assert sum(len(t) for t in outputs["sdpa"]) > 20


def test_sdpa_attention_generates_what_megatron_attention_generates():
    run_distributed(_check_generation, 1)


def _check_experts(rank, world_size, activation):
    import torch.nn.functional as F

    from nemo_neko.moe.config import TaskRoutingConfig
    from nemo_neko.moe.task_context import task_routing_scope
    from nemo_neko.parallel import ParallelLayout, initialize_parallel
    from nemo_neko.testing.models import build_moe_layer, tiny_moe_config

    initialize_parallel(ParallelLayout(), num_experts=8)
    gated = activation == "swiglu"
    config = tiny_moe_config(
        gated_linear_unit=gated, activation_func=F.silu if gated else F.gelu, moe_router_topk=2
    )
    routing = TaskRoutingConfig(task_to_expert=[3, 3])  # one expert is crowded, some get none
    results = {}
    for experts in ("sequential", "grouped"):
        torch.manual_seed(0)
        layer = build_moe_layer(config, routing, local_experts=experts)
        layer.train()
        x = torch.randn(6, 2, config.hidden_size, generator=torch.Generator().manual_seed(2))
        x.requires_grad_(True)
        with task_routing_scope(torch.zeros(2, 6, dtype=torch.long), num_tasks=2):
            out, _ = layer(x)
            _, routing_map = layer.route(x.detach())
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
        results[experts] = (out.detach(), x.grad.clone(), grads, routing_map.sum(dim=0))
    (out, xg, g, counts), (ref_out, ref_xg, ref_g, _) = results["grouped"], results["sequential"]
    assert (counts == 0).any(), "an expert with no token is part of the check"
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xg, ref_xg, rtol=1e-5, atol=1e-6)
    assert g.keys() == ref_g.keys()
    for name in g:
        torch.testing.assert_close(g[name], ref_g[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
def test_grouped_experts_equal_sequential_experts(activation):
    run_distributed(_check_experts, 1, activation)


def _check_output_positions(rank, world_size):
    from nemo_neko.parallel import ParallelLayout, initialize_parallel

    parallel = initialize_parallel(ParallelLayout(), num_experts=8)
    batch = packed_batch()
    batch["loss_mask"][:, ::3] = 0  # prompt-like positions without a loss
    full_loss, full_grads = loss_and_grads(parallel, model_config(), batch)
    loss, grads = loss_and_grads(parallel, model_config(), batch, selected=True)
    mask = torch.from_numpy(batch["loss_mask"]) > 0
    assert loss.shape == (1, int(mask.sum()))
    torch.testing.assert_close(loss[0], full_loss.t()[mask.t()], rtol=1e-6, atol=1e-6)
    for name, grad in full_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_output_layer_on_loss_positions_equals_full_logits():
    run_distributed(_check_output_positions, 1)


def _check_clipping(rank, world_size):
    from megatron.core import utils

    from nemo_neko.compat.cpu import _foreach_l2_norm, _foreach_scale
    from nemo_neko.parallel import ParallelLayout, initialize_parallel

    initialize_parallel(ParallelLayout())  # the CPU shims (Megatron's fallback asks for CUDA)

    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(n, generator=gen) for n in (3, 70, 1, 512)]
    want, _ = utils.local_multi_tensor_l2_norm(0, None, [grads], False)
    got, _ = _foreach_l2_norm(0, None, [grads], False)
    torch.testing.assert_close(got.cpu(), want.cpu(), rtol=1e-6, atol=0)
    scaled = [g.clone() for g in grads]
    utils.local_multi_tensor_scale(0, None, [grads, scaled], 0.37)
    in_place = [g.clone() for g in grads]
    _foreach_scale(0, None, [in_place, in_place], 0.37)
    copied = [torch.empty_like(g) for g in grads]
    _foreach_scale(0, None, [grads, copied], 0.37)
    for a, b, c in zip(scaled, in_place, copied):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_foreach_clipping_equals_megatron_fallbacks():
    run_distributed(_check_clipping, 1)
