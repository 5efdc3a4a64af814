"""The pure routing function against a brute-force reference and against Megatron's top-k."""

import math

import pytest
import torch

from nemo_neko.compat.megatron import topk_routing_with_score_function
from nemo_neko.moe.routing import task_guided_topk


def brute_force(logits, forced, k, score_function, pre_softmax, scaling, bias):
    """Token by token, expert by expert, in plain Python floats."""
    num_tokens, num_experts = logits.shape
    probs = torch.zeros(num_tokens, num_experts, dtype=torch.float64)
    chosen = torch.zeros(num_tokens, num_experts, dtype=torch.bool)
    for t in range(num_tokens):
        row = [float(v) for v in logits[t]]
        if score_function == "softmax":
            total = sum(math.exp(v) for v in row)
            score = [math.exp(v) / total for v in row] if pre_softmax else row
            rank_key = score
        else:
            score = [1 / (1 + math.exp(-v)) for v in row]
            rank_key = [
                s + (float(bias[e]) if bias is not None else 0.0) for e, s in enumerate(score)
            ]
        f = int(forced[t])
        picked = [f] if f >= 0 else []
        others = sorted(
            (e for e in range(num_experts) if e not in picked), key=lambda e: -rank_key[e]
        )
        picked += others[: k - len(picked)]
        if score_function == "softmax" and not pre_softmax:
            z = sum(math.exp(row[e]) for e in picked)
            weights = [math.exp(row[e]) / z for e in picked]
        elif score_function == "softmax":
            weights = [score[e] for e in picked]
        else:
            s = sum(score[e] for e in picked)
            weights = [score[e] / s for e in picked] if k > 1 else [score[picked[0]]]
        for e, w in zip(picked, weights):
            probs[t, e] = w * (scaling or 1.0)
            chosen[t, e] = True
    return probs, chosen


CASES = [
    ("softmax", False, None, False),
    ("softmax", True, None, False),
    ("softmax", False, 2.5, False),
    ("sigmoid", False, None, False),
    ("sigmoid", False, None, True),
    ("sigmoid", False, 1.5, True),
]


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("score_function,pre_softmax,scaling,with_bias", CASES)
def test_matches_brute_force(k, score_function, pre_softmax, scaling, with_bias):
    gen = torch.Generator().manual_seed(k * 31 + len(score_function))
    num_tokens, num_experts = 64, 8
    logits = torch.randn(num_tokens, num_experts, generator=gen, dtype=torch.float64)
    forced = torch.randint(0, num_experts, (num_tokens,), generator=gen)
    forced[torch.rand(num_tokens, generator=gen) < 0.3] = -1  # holes: plain top-k tokens
    bias = torch.randn(num_experts, generator=gen, dtype=torch.float64) if with_bias else None

    probs, routing_map = task_guided_topk(
        logits,
        forced,
        k,
        score_function=score_function,
        use_pre_softmax=pre_softmax,
        scaling_factor=scaling,
        expert_bias_E=bias,
    )
    want_probs, want_map = brute_force(
        logits, forced, k, score_function, pre_softmax, scaling, bias
    )

    assert torch.equal(routing_map, want_map)
    # Megatron computes the softmax in fp32 even for fp64 logits: compare at fp32 precision.
    torch.testing.assert_close(probs, want_probs, rtol=1e-6, atol=1e-6)
    assert routing_map.sum(dim=1).eq(k).all()
    labelled = forced >= 0
    assert routing_map[labelled, forced[labelled]].all(), "forced expert missing"


@pytest.mark.parametrize("score_function,pre_softmax,scaling,with_bias", CASES)
def test_unforced_tokens_match_megatron_bit_for_bit(
    score_function, pre_softmax, scaling, with_bias
):
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(128, 8, generator=gen)
    bias = torch.randn(8, generator=gen) if with_bias else None
    conventions = dict(
        score_function=score_function, use_pre_softmax=pre_softmax, scaling_factor=scaling
    )
    theirs = topk_routing_with_score_function(logits, 2, expert_bias=bias, **conventions)
    for forced in (torch.full((128,), -1), None):  # every token unlabelled / no forcing at all
        ours = task_guided_topk(logits, forced, 2, expert_bias_E=bias, **conventions)
        assert torch.equal(ours[0], theirs[0])
        assert torch.equal(ours[1], theirs[1])


def test_forced_expert_wins_even_when_the_gate_ranks_it_last():
    logits = torch.tensor([[5.0, 4.0, 3.0, -9.0]])
    probs, routing_map = task_guided_topk(logits, torch.tensor([3]), 2)
    assert routing_map.tolist() == [[True, False, False, True]]
    # softmax over the selected logits (5, -9): the paper's eq. 3, normalised
    expected = torch.softmax(torch.tensor([5.0, -9.0]), dim=0)
    torch.testing.assert_close(probs[0, [0, 3]], expected)


def test_gradients_flow_to_selected_logits_only():
    logits = torch.randn(16, 8, requires_grad=True)
    forced = torch.arange(16) % 8
    probs, routing_map = task_guided_topk(logits, forced, 2)
    (probs * torch.randn(16, 8)).sum().backward()
    assert torch.all(logits.grad[~routing_map] == 0)
    assert torch.any(logits.grad[routing_map] != 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="tokens, experts"):
        task_guided_topk(torch.zeros(2, 3, 4), None, 2)
    with pytest.raises(ValueError, match="topk must be in"):
        task_guided_topk(torch.zeros(2, 4), None, 5)
    with pytest.raises(ValueError, match="score_function"):
        task_guided_topk(torch.zeros(2, 4), None, 2, score_function="relu")
    with pytest.raises(ValueError, match="forced_expert must be"):
        task_guided_topk(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long), 2)
