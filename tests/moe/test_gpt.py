"""A tiny Megatron GPTModel whose MoE layers are NeKo's learns: the loss falls over AdamW steps."""

import pytest
import torch

from nemo_neko.compat import megatron as mc
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.layer import NeKoMoELayer
from nemo_neko.moe.stats import collect_routing_stats, forced_share
from nemo_neko.moe.task_context import task_routing_scope
from nemo_neko.parallel import ParallelLayout, initialize_parallel
from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.models import build_tiny_gpt, causal_mask, tiny_moe_config

VOCAB, SEQ, BATCH, STEPS = 64, 16, 4, 12


def _train(rank, world_size, layout, overrides):
    initialize_parallel(layout, num_experts=8, num_layers=2, seed=7)
    config = tiny_moe_config(
        hidden_size=64,
        num_attention_heads=4,
        ffn_hidden_size=128,
        moe_ffn_hidden_size=64,
        **overrides,
    )
    routing = TaskRoutingConfig.for_datasets(["atis", "ls_clean", "swbd"], 8)
    model = build_tiny_gpt(config, routing, vocab_size=VOCAB, max_sequence_length=SEQ)
    moe_layers = [m for m in model.modules() if isinstance(m, NeKoMoELayer)]
    assert len(moe_layers) == 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)

    gen = torch.Generator().manual_seed(0)  # same batch on every rank
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=gen)
    task_ids = torch.randint(0, 3, (BATCH, 1), generator=gen).expand(
        BATCH, SEQ
    )  # one task per sample
    position_ids = torch.arange(SEQ).expand(BATCH, SEQ)
    tp_group = mc.parallel_state.get_tensor_model_parallel_group()
    losses = []
    model.train()
    for _ in range(STEPS):
        with task_routing_scope(
            task_ids, sequence_parallel=layout.sequence_parallel, tp_group=tp_group
        ):
            loss_BS = model(tokens[:, :-1], position_ids, causal_mask(SEQ), labels=tokens[:, 1:])
        loss = loss_BS.float().mean()
        optimizer.zero_grad()
        loss.backward()
        if layout.sequence_parallel:  # what Megatron's DDP does for sequence-parallel weights
            for p in model.parameters():
                if getattr(p, "sequence_parallel", False) and p.grad is not None:
                    torch.distributed.all_reduce(p.grad, group=tp_group)
        optimizer.step()
        losses.append(loss.item())
        mc.clear_aux_losses()

    assert losses[-1] < 0.6 * losses[0], f"loss did not fall: {losses}"
    stats = collect_routing_stats(
        moe_layers, group=mc.parallel_state.get_expert_model_parallel_group()
    )
    for counts in stats.values():
        assert int(counts.sum()) == layout.expert * STEPS * BATCH * SEQ * 2
        assert forced_share(counts) == pytest.approx(0.5)


def test_tiny_gpt_loss_falls():
    run_distributed(_train, 1, ParallelLayout(), {})


@pytest.mark.slow
def test_tiny_gpt_loss_falls_with_expert_parallel_2():
    # both ranks see the same batch, so the replicated (non-expert) gradients agree without DDP
    run_distributed(_train, 2, ParallelLayout(expert=2), dict(expert_model_parallel_size=2))


@pytest.mark.slow
def test_tiny_gpt_loss_falls_with_tp2_sequence_parallel():
    # every norm is NeKo's RMSNorm here: Megatron's torch norm refuses sequence parallelism
    layout = ParallelLayout(tensor=2, sequence_parallel=True)
    run_distributed(_train, 2, layout, dict(tensor_model_parallel_size=2, sequence_parallel=True))
