"""A tiny Canary: NeMo's ``EncDecMultiTaskModel`` with random weights, built here from code.

Same architecture as Canary, scaled down: a FastConformer encoder (``ConformerEncoder`` with
``dw_striding`` subsampling by 8), a pre-LN transformer decoder, a token classifier tied to the
decoder embeddings, and Canary's aggregate tokenizer (``CanaryTokenizer``): a ``spl_tokens``
SentencePiece model of the special prompt tokens (built with
``CanaryTokenizer.build_special_tokenizer``) plus an ``en`` BPE SentencePiece model trained on
the fly from text. Nothing is downloaded. Saved as a ``.nemo`` file and restored, it exercises
the real loading and ``transcribe()`` paths on CPU in seconds; its transcripts are garbage
(random weights), so tests check structure, not accuracy.

    python data_prep/make_tiny_canary.py runs/tiny_canary.nemo
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_neko.asr.backends.canary import NEMO_HINT


@dataclass
class TinyCanaryConfig:
    """Sizes of the tiny model (defaults: about 0.25 M parameters)."""

    features: int = 64
    """Log-mel features."""
    enc_d_model: int = 64
    enc_layers: int = 2
    enc_heads: int = 4
    subsampling_factor: int = 8
    """FastConformer's 8x depthwise-striding subsampling."""
    dec_hidden: int = 64
    dec_layers: int = 1
    dec_heads: int = 2
    max_sequence_length: int = 48
    """Prompt plus generated tokens (bounds decoding time with random weights)."""
    en_vocab_size: int = 64
    """Size of the ``en`` BPE tokenizer trained on the text (rounded up so that the aggregate
    vocabulary is a multiple of 8)."""
    seed: int = 0


def model_config(cfg: TinyCanaryConfig, spl_dir: str, en_dir: str) -> dict[str, Any]:
    """The ``EncDecMultiTaskModel`` config (Canary-1B's layout, tiny sizes)."""
    return {
        "prompt_format": "canary",
        "prompt_defaults": [
            {
                "role": "user",
                "slots": {"source_lang": "en", "target_lang": "en", "task": "asr", "pnc": "yes"},
            }
        ],
        "sample_rate": 16000,
        "restore_timestamps_model": False,
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "features": cfg.features,
            "n_fft": 512,
            "dither": 0.0,
            "pad_to": 0,
        },
        "model_defaults": {
            "asr_enc_hidden": cfg.enc_d_model,
            "lm_enc_hidden": cfg.dec_hidden,
            "lm_dec_hidden": cfg.dec_hidden,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": cfg.features,
            "n_layers": cfg.enc_layers,
            "d_model": cfg.enc_d_model,
            "subsampling": "dw_striding",
            "subsampling_factor": cfg.subsampling_factor,
            "subsampling_conv_channels": cfg.enc_d_model,
            "ff_expansion_factor": 2,
            "self_attention_model": "rel_pos",
            "n_heads": cfg.enc_heads,
            "conv_kernel_size": 9,
            "xscaling": False,
        },
        "transf_decoder": {
            "_target_": "nemo.collections.asr.modules.transformer.get_nemo_transformer",
            "model_name": None,
            "pretrained": False,
            "encoder": None,
            "pre_ln_final_layer_norm": True,
            "config_dict": {
                "max_sequence_length": cfg.max_sequence_length,
                "num_token_types": 0,
                "hidden_size": cfg.dec_hidden,
                "inner_size": 2 * cfg.dec_hidden,
                "num_layers": cfg.dec_layers,
                "num_attention_heads": cfg.dec_heads,
                "pre_ln": True,
                "vocab_size": None,
            },
        },
        "head": {
            "_target_": "nemo.collections.asr.parts.submodules.token_classifier.TokenClassifier",
            "num_layers": 1,
            "activation": "relu",
            "log_softmax": True,
            "hidden_size": cfg.dec_hidden,
            "num_classes": None,
        },
        "tokenizer": {
            "dir": None,
            "type": "agg",
            "langs": {
                "spl_tokens": {"dir": spl_dir, "type": "bpe"},
                "en": {"dir": en_dir, "type": "bpe"},
            },
            "custom_tokenizer": {
                "_target_": "nemo.collections.common.tokenizers.canary_tokenizer.CanaryTokenizer",
                "tokenizers": None,
            },
        },
        "decoding": {"strategy": "beam", "beam": {"beam_size": 1}},
        "loss": {
            "_target_": "nemo.collections.common.losses.smoothed_cross_entropy.SmoothedCrossEntropyLoss",
            "label_smoothing": 0.0,
        },
    }


def build_tiny_canary(
    work_dir: str | Path, texts: Sequence[str] | None = None, config: TinyCanaryConfig | None = None
):
    """A random-weight ``EncDecMultiTaskModel`` with tokenizers trained into ``work_dir``.

    Args:
        work_dir: where the tokenizer files go (kept: the model refers to them until saved).
        texts: training text of the ``en`` tokenizer (default: :data:`~nemo_neko.asr.synth.SENTENCES`).
        config: sizes.
    """
    try:
        import torch
        from nemo.collections.asr.models import EncDecMultiTaskModel
        from nemo.collections.common.tokenizers.canary_tokenizer import CanaryTokenizer
        from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model
        from omegaconf import DictConfig
    except ImportError as err:
        raise ImportError(NEMO_HINT) from err
    from nemo_neko.asr.synth import SENTENCES

    config = config or TinyCanaryConfig()
    work_dir = Path(work_dir)
    en_dir, spl_dir = work_dir / "tokenizer_en", work_dir / "tokenizer_spl"
    en_dir.mkdir(parents=True, exist_ok=True)
    spl = CanaryTokenizer.build_special_tokenizer(
        ["<|en|>", "<|transcribe|>", "<|translate|>"], spl_dir
    )
    # the decoder's output layer has 8 * ceil(vocab / 8) classes: make the aggregate vocabulary
    # exactly that, so no class is left without a token (random weights emit every class)
    en_vocab = -(-(spl.vocab_size + config.en_vocab_size) // 8) * 8 - spl.vocab_size
    text_file = en_dir / "train_text.txt"
    text_file.write_text("\n".join(texts or SENTENCES) + "\n")
    create_spt_model(
        str(text_file),
        vocab_size=en_vocab,
        sample_size=-1,
        do_lower_case=False,
        tokenizer_type="bpe",
        output_dir=str(en_dir),
    )
    torch.manual_seed(config.seed)
    model = EncDecMultiTaskModel(cfg=DictConfig(model_config(config, str(spl_dir), str(en_dir))))
    return model.eval()


def save_tiny_canary(
    path: str | Path, texts: Sequence[str] | None = None, config: TinyCanaryConfig | None = None
) -> Path:
    """Build the tiny Canary and save it as a ``.nemo`` file (tokenizers packed inside)."""
    path = Path(path)
    if path.suffix != ".nemo":
        raise ValueError(f"{path}: a NeMo model file must end in .nemo")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        model = build_tiny_canary(work, texts, config)
        tmp = path.with_name(path.name + ".tmp.nemo")
        model.save_to(str(tmp))
        tmp.replace(path)
    return path
