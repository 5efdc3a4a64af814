"""Temperature sampling of ``n`` hypotheses per utterance through NeMo's own ``transcribe()``.

The bug (NeMo 3.0.0, ``nemo/collections/asr/parts/submodules/multitask_greedy_decoding.py``):
with ``decoding.strategy=greedy_batch``, ``greedy.temperature=T`` and ``greedy.n_samples=n > 1``,
:class:`TransformerAEDGreedyInfer.forward` gets the ``n`` samples of every utterance from
``GreedySequenceGenerator`` correctly (encoder states repeated ``n`` times, one categorical
draw per row), but then, per utterance, calls ``format_hypotheses`` on ``n`` *empty*
hypotheses together with the prompt ids of the whole batch, *before* packing the samples into
them. ``transcribe()`` therefore stops on::

    AssertionError: Mismatching number of examples len(packed_result)=5 decoder_input_ids.shape[0]=3

(``len(packed_result)`` is ``n``, the other number the batch size; when they happen to be equal
the next check, that the prompt prefixes the still-empty prediction, fails instead).

The workaround, :class:`MultiSampleAEDGreedyInfer`, subclasses that decoder and fixes only the
order: pack each utterance's ``n`` sampled rows into hypotheses first, then strip that
utterance's prompt (repeated ``n`` times) and the EOS/padding with NeMo's own
``format_hypotheses``. It returns ``NBestHypotheses`` like beam search with
``return_best_hypothesis=False`` does, so the rest of ``transcribe()`` (the text decoding in
``MultiTaskDecoding.decode_predictions_tensor``) is NeMo's unchanged code, and the encoder runs
once per utterance, not ``n`` times. :func:`install_multisample_decoding` puts it on one model
instance (``model.decoding.decoding``), explicitly, after ``change_decoding_strategy``; nothing
is patched at import.

Sampling draws from the global torch RNG (``torch.distributions.Categorical``): seed with
``torch.manual_seed`` before ``transcribe()`` for reproducible samples.
"""

from __future__ import annotations

import torch
from nemo.collections.asr.parts.submodules.multitask_greedy_decoding import (
    TransformerAEDGreedyInfer,
)
from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis, NBestHypotheses

__all__ = ["MultiSampleAEDGreedyInfer", "install_multisample_decoding", "stock_bug_message"]

stock_bug_message = "Mismatching number of examples"
"""Start of the AssertionError NeMo 3.0's stock multi-sample path raises inside ``transcribe()``."""


class MultiSampleAEDGreedyInfer(TransformerAEDGreedyInfer):
    """``TransformerAEDGreedyInfer`` whose ``n_samples > 1`` path returns ``n`` hypotheses each."""

    def forward(
        self,
        encoder_hidden_states: torch.Tensor,
        encoder_input_mask: torch.Tensor,
        decoder_input_ids: torch.Tensor | None = None,
        partial_hypotheses: list[Hypothesis] | None = None,
    ) -> tuple[list[NBestHypotheses]]:
        """Sample ``n_samples`` continuations of each prompt.

        Args:
            encoder_hidden_states: ``[B, T, D]`` encoder output.
            encoder_input_mask: ``[B, T]``.
            decoder_input_ids: ``[B, P]`` prompt ids (stripped from the outputs), or None.
            partial_hypotheses: unused (NeMo's signature).

        Returns:
            ``([NBestHypotheses] * B,)``: per utterance, its ``n_samples`` hypotheses in draw
            order, with ``score`` 0.0 (sampling gives no sequence score).
        """
        if self.temperature is None or self.n_samples <= 1:
            return super().forward(
                encoder_hidden_states=encoder_hidden_states,
                encoder_input_mask=encoder_input_mask,
                decoder_input_ids=decoder_input_ids,
                partial_hypotheses=partial_hypotheses,
            )
        modules = (self.transformer_decoder, self.log_softmax_module)
        was_training = [m.training for m in modules]
        try:
            for module in modules:
                module.eval()
            with torch.inference_mode():
                _, samples, _, _ = self.greedy_search(
                    encoder_hidden_states=encoder_hidden_states,
                    encoder_input_mask=encoder_input_mask,
                    decoder_input_ids=decoder_input_ids,
                )
        finally:
            for module, mode in zip(modules, was_training):
                module.train(mode)
        prompts = None if decoder_input_ids is None else decoder_input_ids.detach().cpu()
        packed = []
        for i, rows_NT in enumerate(samples):  # rows_NT: [n_samples, prompt + generated]
            rows_NT = rows_NT.detach().cpu().long()
            hyps = [Hypothesis(score=0.0, y_sequence=row, timestamp=[]) for row in rows_NT]
            prefix = None if prompts is None else prompts[i : i + 1].expand(len(hyps), -1)
            self.format_hypotheses(hyps, prefix)
            packed.append(NBestHypotheses(hyps))
        return (packed,)


def install_multisample_decoding(model) -> MultiSampleAEDGreedyInfer:
    """Replace ``model.decoding.decoding`` (a stock ``TransformerAEDGreedyInfer`` configured with
    ``n_samples > 1`` and a temperature) by the fixed decoder, same settings and modules.

    Call after ``model.change_decoding_strategy(...)`` (which builds a new stock decoder).

    Raises:
        TypeError: the model's current decoder is not NeMo's greedy AED decoder.
        ValueError: it is not configured for multi-sample temperature sampling.
    """
    stock = model.decoding.decoding
    if type(stock) is MultiSampleAEDGreedyInfer:
        return stock
    if not isinstance(stock, TransformerAEDGreedyInfer):
        raise TypeError(
            f"expected NeMo's TransformerAEDGreedyInfer on model.decoding.decoding, got "
            f"{type(stock).__name__} (set decoding.strategy=greedy_batch first)"
        )
    if stock.temperature is None or stock.n_samples <= 1:
        raise ValueError(
            "multi-sample decoding needs decoding.greedy.temperature set and "
            f"decoding.greedy.n_samples > 1 (got {stock.temperature}, {stock.n_samples})"
        )
    generator = stock.greedy_search
    fixed = MultiSampleAEDGreedyInfer(
        transformer_decoder=stock.transformer_decoder,
        log_softmax_module=stock.log_softmax_module,
        tokenizer=stock.tokenizer,
        temperature=stock.temperature,
        max_generation_delta=generator.max_delta_len,
        preserve_alignments=stock.preserve_alignments,
        n_samples=stock.n_samples,
    )
    model.decoding.decoding = fixed
    return fixed
