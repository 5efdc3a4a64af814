"""Batched greedy decoding through a Megatron-Core GPTModel, with a KV cache or without.

``KVCacheDecoder`` runs each batch once over the common prompt prefix, then one token at a time
through Megatron's ``StaticInferenceContext`` (keys and values cached per layer): a row whose prompt
is longer than the prefix is fed its own prompt tokens until it starts generating, so every
position a row attends to is a real token and no padding mask is needed. Batches are formed from
prompts of similar length (sorted), which keeps that feeding short.

``RecomputeDecoder`` reruns the whole sequence at every step (no cache): the baseline the
generation benchmark compares against, and an independent check of the cached path.

The model must be in eval mode: NeKo routers then route by plain top-k, without task ids.

Split over the ranks of one model replica (tensor and expert parallelism, ``correct`` under
torchrun: :mod:`.sharding`), every rank runs the same batches and steps: the logits are gathered
over TP (``runtime_gather_output=True``, ``[B, V]`` whole on every rank), and the tokens chosen
at each step are broadcast from the replica's first rank (``group``), so every decision of the
loop (the next token, which rows have finished, when the batch ends) is the same on all of them
even where the ranks' floating-point sums differ in the last bit.

Megatron-Core's own inference engine is not used: its dynamic engine (which the static one now
wraps) needs CUDA (``torch.cuda.memory_stats``, CUDA memory pools, NVTX ranges, device tensors
from ``torch.cuda.current_device()``), so it cannot run on the CPU machines this project tests
on; and ``correct`` needs what it does not give: each prompt's routing counted per record during
the prefill (task-id scope labels, :mod:`.routing`), the n-gram ban and a per-row token bound.
This decoder uses Megatron's model, attention and ``StaticInferenceContext`` KV cache unchanged.

Shapes: B rows, P prompt tokens, T = P + new tokens, V vocabulary (padded).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Generation:
    """Generated token ids of one prompt (EOS excluded) and why it stopped."""

    tokens: list[int]
    stopped_at_eos: bool


def length_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``prompts`` in batches of similar length (longest first)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def banned_next_tokens(tokens: Sequence[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already in ``tokens`` (after its last n - 1)."""
    if n <= 0 or len(tokens) < n:
        return [] if n != 1 else sorted(set(tokens))
    prefix = tuple(tokens[len(tokens) - n + 1 :])
    return sorted(
        {
            tokens[i + n - 1]
            for i in range(len(tokens) - n + 1)
            if tuple(tokens[i : i + n - 1]) == prefix
        }
    )


class _Decoder:
    def __init__(self, model, eos_id: int, pad_id: int, no_repeat_ngram_size: int = 0, group=None):
        """``group``: the ranks of one model replica (``torch.distributed`` group; None: one
        rank); the chosen tokens are broadcast from its first rank at every step."""
        self.model = model
        self.group = group
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.device = next(model.parameters()).device

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: Sequence[int],
        batch_size: int = 16,
        labels: Sequence[int] | None = None,
        num_labels: int | None = None,
    ) -> list[Generation]:
        """Greedy continuations of ``prompts``; row ``i`` stops at EOS or ``max_new_tokens[i]``.

        ``labels`` (one per prompt, ``< num_labels``) are put in the task-id scope while each
        batch's common prompt prefix runs, so that NeKo's routing statistics count the prompts'
        tokens per label (eval mode: routing itself ignores them; :mod:`.routing`).
        """
        results: list[Generation | None] = [None] * len(prompts)
        with torch.no_grad():
            for batch in length_batches(prompts, batch_size):
                outputs = self._generate_batch(
                    [list(prompts[i]) for i in batch],
                    [max_new_tokens[i] for i in batch],
                    None if labels is None else ([labels[i] for i in batch], num_labels),
                )
                for i, out in zip(batch, outputs):
                    results[i] = out
        return results  # type: ignore[return-value]

    def _choose(self, logits_BV: torch.Tensor, generated: list[list[int]]) -> list[int]:
        """Greedy choice per row; with ``no_repeat_ngram_size = n``, a token that would repeat
        an n-gram of the row's own generated tokens is never chosen (the prompt does not count:
        copying a hypothesis stays allowed)."""
        n = self.no_repeat_ngram_size
        if n > 0:
            logits_BV = logits_BV.clone()
            for r, tokens in enumerate(generated):
                banned = banned_next_tokens(tokens, n)
                if banned:
                    logits_BV[r, banned] = float("-inf")
        choice_B = logits_BV.argmax(dim=-1)
        if self.group is not None and dist.get_world_size(self.group) > 1:
            choice_B = choice_B.to(self.device).contiguous()
            dist.broadcast(choice_B, group=self.group, group_src=0)
        return choice_B.tolist()

    def _step_logits(self, tokens_BT, positions_BT, start: int, end: int):
        raise NotImplementedError

    def _prepare(self, batch_size: int, total_length: int) -> None:
        pass

    def _generate_batch(
        self, prompts: list[list[int]], limits: list[int], labels=None
    ) -> list[Generation]:
        rows = len(prompts)
        lengths = [len(p) for p in prompts]
        shortest, total = min(lengths), max(len(p) + n for p, n in zip(prompts, limits))
        tokens = torch.full((rows, total), self.pad_id, dtype=torch.long)
        for r, prompt in enumerate(prompts):
            tokens[r, : len(prompt)] = torch.tensor(prompt)
        tokens = tokens.to(self.device)
        positions = torch.arange(total, device=self.device).expand(rows, total)
        generated: list[list[int]] = [[] for _ in range(rows)]
        finished = [limit == 0 for limit in limits]
        eos = [False] * rows
        self._prepare(rows, total)
        if labels is None:
            logits = self._step_logits(tokens, positions, 0, shortest)
        else:
            from nemo_neko.moe.task_context import task_routing_scope

            rows_B, count = labels
            ids_BS = torch.tensor(rows_B, dtype=torch.long).unsqueeze(1).expand(rows, shortest)
            with task_routing_scope(ids_BS.contiguous(), num_tasks=count):
                logits = self._step_logits(tokens, positions, 0, shortest)
        for t in range(shortest, total):
            choice = self._choose(logits, generated)
            for r in range(rows):
                if t < lengths[r]:
                    continue  # still inside its prompt: keep the prompt token
                if finished[r]:
                    tokens[r, t] = self.pad_id
                    continue
                tokens[r, t] = choice[r]
                if choice[r] == self.eos_id:
                    finished[r] = eos[r] = True
                else:
                    generated[r].append(choice[r])
                    finished[r] = len(generated[r]) >= limits[r]
            if all(finished) or t + 1 >= total:
                break
            logits = self._step_logits(tokens, positions, t, t + 1)
        return [Generation(g, e) for g, e in zip(generated, eos)]


class KVCacheDecoder(_Decoder):
    """Greedy decoding with Megatron's static KV cache (see the module docstring)."""

    def _prepare(self, batch_size: int, total_length: int) -> None:
        from nemo_neko.compat.megatron import static_inference_context

        self.context = static_inference_context(batch_size, total_length)

    def _step_logits(self, tokens_BT, positions_BT, start, end):
        if start > 0:
            self.context.enable_decode_mode()
        logits = self.model(
            tokens_BT[:, start:end],
            positions_BT[:, start:end],
            None,
            inference_context=self.context,
            runtime_gather_output=True,
        )
        self.context.increment_sequence_len_offset(end - start)
        return logits[:, -1].float()


class RecomputeDecoder(_Decoder):
    """Greedy decoding that reruns the whole prefix at every step (no cache)."""

    def _step_logits(self, tokens_BT, positions_BT, start, end):
        length = end
        mask = torch.triu(torch.ones(length, length, dtype=torch.bool, device=self.device), 1)
        logits = self.model(
            tokens_BT[:, :length], positions_BT[:, :length], mask.view(1, 1, length, length)
        )
        return logits[:, -1].float()
