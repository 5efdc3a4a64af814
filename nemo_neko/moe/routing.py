"""Task-guided top-k routing as a pure function of plain tensors.

NeKo (arXiv 2411.05945, eq. 3) routes every token of a training sample from dataset T to the
dataset's expert f(T) *and* to the gate's best choice among the other experts. With top-k
routing in general: a token with a forced expert gets that expert plus the gate's top-(k-1)
among the *other* experts; a token without one (forced id -1) gets plain top-k.

Combine weights follow Megatron-Core's ``topk_routing_with_score_function`` exactly, so that a
token without a forced expert is routed bit for bit as Megatron would route it:

* ``softmax`` (default): softmax over the k *selected* logits (the paper's eq. 3, normalised);
  with ``use_pre_softmax`` the softmax runs over all experts first and the selected
  probabilities are used as they are;
* ``sigmoid``: sigmoid scores, selection on ``scores + expert_bias`` when a bias is given,
  weights normalised over the selected scores when k > 1;
* ``scaling_factor`` multiplies the weights.

Shapes: T tokens, E experts, K = topk. Tensors carry their shape in their names.
"""

from __future__ import annotations

import torch

SCORE_FUNCTIONS = ("softmax", "sigmoid")


def forced_expert_mask(forced_expert_T: torch.Tensor, num_experts: int) -> torch.Tensor:
    """``[T, E]`` bool, True at (t, forced_expert[t]); rows with forced id -1 are all False."""
    experts_E = torch.arange(num_experts, device=forced_expert_T.device)
    return forced_expert_T.unsqueeze(1) == experts_E.unsqueeze(0)


def task_guided_topk(
    logits_TE: torch.Tensor,
    forced_expert_T: torch.Tensor | None,
    topk: int,
    *,
    score_function: str = "softmax",
    use_pre_softmax: bool = False,
    scaling_factor: float | None = None,
    expert_bias_E: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Route tokens to k experts, forcing each token's task expert when it has one.

    Args:
        logits_TE: router logits ``[T, E]``.
        forced_expert_T: ``[T]`` integer expert index per token, -1 for "no forced expert";
            ``None`` means no token is forced (plain top-k).
        topk: experts per token, K >= 1.
        score_function: ``"softmax"`` or ``"sigmoid"`` (Megatron's ``moe_router_score_function``).
        use_pre_softmax: softmax over all experts before selection (softmax only).
        scaling_factor: multiplies the combine weights (``moe_router_topk_scaling_factor``).
        expert_bias_E: ``[E]`` selection bias for sigmoid routing (aux-loss-free balancing);
            it moves the choice of the gate experts, never the forced one, and never the weights.

    Returns:
        ``(probs_TE, routing_map_TE)``: combine weights ``[T, E]`` (zero outside the chosen
        experts, dtype of ``logits_TE``) and the boolean choice ``[T, E]`` with K True per row,
        in the layout Megatron's ``TopKRouter.routing`` returns.
    """
    if logits_TE.dim() != 2:
        raise ValueError(f"logits must be [tokens, experts], got shape {tuple(logits_TE.shape)}")
    num_tokens, num_experts = logits_TE.shape
    if not 1 <= topk <= num_experts:
        raise ValueError(f"topk must be in [1, {num_experts}], got {topk}")
    if score_function not in SCORE_FUNCTIONS:
        raise ValueError(f"score_function must be one of {SCORE_FUNCTIONS}, got {score_function!r}")

    forced_TE = None
    if forced_expert_T is not None:
        if forced_expert_T.shape != (num_tokens,):
            raise ValueError(
                f"forced_expert must be [tokens]=[{num_tokens}], got {tuple(forced_expert_T.shape)}"
            )
        forced_TE = forced_expert_mask(forced_expert_T, num_experts)

    def select_topk(selection_TE: torch.Tensor) -> torch.Tensor:
        # The forced expert outranks every other expert; the rest is the gate's own order.
        if forced_TE is not None:
            selection_TE = selection_TE.masked_fill(forced_TE, float("inf"))
        return torch.topk(selection_TE, k=topk, dim=1).indices

    if score_function == "softmax":
        if use_pre_softmax:
            scores_TE = torch.softmax(logits_TE, dim=-1, dtype=torch.float32).type_as(logits_TE)
            top_TK = select_topk(scores_TE)
            probs_TK = scores_TE.gather(1, top_TK)
        else:
            top_TK = select_topk(logits_TE)
            selected_TK = logits_TE.gather(1, top_TK)
            probs_TK = torch.softmax(selected_TK, dim=-1, dtype=torch.float32).type_as(logits_TE)
    else:
        scores_TE = torch.sigmoid(logits_TE.float()).type_as(logits_TE)
        selection_TE = scores_TE if expert_bias_E is None else scores_TE + expert_bias_E
        top_TK = select_topk(selection_TE)
        selected_TK = scores_TE.gather(1, top_TK).type_as(logits_TE)
        probs_TK = (
            selected_TK / (selected_TK.sum(dim=-1, keepdim=True) + 1e-20)
            if topk > 1
            else selected_TK
        )

    if scaling_factor:
        probs_TK = probs_TK * scaling_factor

    probs_TE = torch.zeros_like(logits_TE).scatter(1, top_TK, probs_TK)
    routing_map_TE = torch.zeros_like(logits_TE, dtype=torch.bool).scatter(1, top_TK, True)
    return probs_TE, routing_map_TE


def select_with_forced(
    scores_TE: torch.Tensor,
    forced_expert_T: torch.Tensor,
    topk: int,
    compute_topk,
    num_groups: int | None = None,
    group_topk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Megatron's selection step with the forced expert first: ``(selected scores, indices)``.

    ``compute_topk(scores, topk, num_groups, group_topk) -> (values, indices)`` is Megatron's own
    top-k; it runs on the scores with each token's forced expert raised to +inf (rows with forced
    id -1 are untouched), and the returned values are the *original* scores at the chosen indices,
    which is what Megatron's score functions expect from the selection.

    Shapes: ``scores_TE`` ``[T, E]``, ``forced_expert_T`` ``[T]``; returns ``[T, K]`` twice.
    """
    forced_TE = forced_expert_mask(forced_expert_T, scores_TE.shape[1])
    _, top_TK = compute_topk(
        scores_TE.masked_fill(forced_TE, float("inf")), topk, num_groups, group_topk
    )
    return scores_TE.gather(1, top_TK), top_TK
