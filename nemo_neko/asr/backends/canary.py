"""NVIDIA Canary (NeMo ``EncDecMultiTaskModel``) N-best lists, through ``model.transcribe()``.

Methods (``CanaryConfig.method``):

==============  =================================================================================
``beam``        ``decoding.strategy=beam``, ``beam.beam_size=beam_size`` (default ``n``),
                ``beam.return_best_hypothesis=False``: the ``n`` best beams, with their scores
``sample``      ``strategy=greedy_batch``, ``greedy.temperature`` (the paper: 0.3),
                ``greedy.n_samples=n``: ``n`` independent draws per utterance, no scores. NeMo
                3.0's stock path for this fails inside ``transcribe()``; see
                :mod:`nemo_neko.asr.backends.canary_sampling` for the assertion and the fix
``first_pass``  the Open ASR Leaderboard's own pass (``run_eval.py``: beam search of width 1,
                ``pnc="no"``): one hypothesis with its score, the 1-best baseline
==============  =================================================================================

The model comes from a ``.nemo`` file (``EncDecMultiTaskModel.restore_from``) or a pretrained
name (``from_pretrained``, e.g. ``nvidia/canary-1b-flash``). On CUDA it runs in bfloat16 (the
model cast to bf16, as the leaderboard does); on CPU in float32. Audio arrives as one batch of
16 kHz arrays per call; the caller sorts utterances by duration so padding stays small.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nemo_neko.asr.backends.base import config_from_options
from nemo_neko.asr.nbest import NBest

log = logging.getLogger(__name__)

NEMO_HINT = (
    "the canary backend needs NVIDIA NeMo's ASR collection: "
    'pip install -c constraints/cpu.txt "nemo_toolkit[asr]==3.0.*" (inside the NeMo container it '
    "is already installed)"
)
METHODS = ("beam", "sample", "first_pass")


@dataclass
class CanaryConfig:
    """Options of the ``canary`` backend."""

    model: str = "nvidia/canary-1b-flash"
    """A ``.nemo`` file, or a pretrained model name for ``from_pretrained``."""
    method: str = "beam"
    """``beam``, ``sample`` or ``first_pass`` (see the module docstring)."""
    n: int = 5
    """Hypotheses per utterance (``first_pass``: always 1)."""
    beam_size: int | None = None
    """Beam width for ``beam`` (default ``n``; must be >= ``n``)."""
    temperature: float = 0.3
    """Sampling temperature for ``sample`` (the paper: 0.3)."""
    source_lang: str = "en"
    target_lang: str = "en"
    pnc: str = "no"
    """Punctuation and capitalisation in the output (``"yes"``/``"no"``; the leaderboard: no)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``, ..."""
    dtype: str = "auto"
    """``auto`` (bfloat16 on CUDA, float32 on CPU), ``bfloat16``, ``float16`` or ``float32``."""
    threads: int | None = None
    """CPU threads for torch (``torch.set_num_threads``, process-wide); None: torch's default."""

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"canary method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.method == "beam" and self.beam_size is not None and self.beam_size < self.n:
            raise ValueError(f"beam_size={self.beam_size} is smaller than n={self.n}")
        if self.method == "first_pass" and self.pnc != "no":
            raise ValueError(
                f"first_pass is the leaderboard's pass, with pnc='no' (got {self.pnc!r})"
            )
        if self.method == "sample" and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(
                f"dtype must be auto, bfloat16, float16 or float32, got {self.dtype!r}"
            )


def load_canary(model: str, device: str = "cpu"):
    """``EncDecMultiTaskModel`` from a ``.nemo`` file or a pretrained name, in eval mode."""
    try:
        from nemo.collections.asr.models import EncDecMultiTaskModel
    except ImportError as err:
        raise ImportError(NEMO_HINT) from err
    if model.endswith(".nemo"):
        loaded = EncDecMultiTaskModel.restore_from(model, map_location=device)
    else:
        loaded = EncDecMultiTaskModel.from_pretrained(model, map_location=device)
    if not isinstance(loaded, EncDecMultiTaskModel):
        raise TypeError(f"{model}: expected an EncDecMultiTaskModel, got {type(loaded).__name__}")
    return loaded.eval()


def set_decoding(asr_model, method: str, n: int, beam_size: int | None, temperature: float) -> None:
    """Configure ``asr_model``'s decoding for ``method`` (see the module docstring)."""
    from nemo.collections.asr.parts.submodules.multitask_decoding import MultiTaskDecodingConfig
    from omegaconf import OmegaConf, open_dict

    # NeMo's defaults under the model's own settings (a checkpoint's config may omit sections)
    defaults = OmegaConf.create(
        OmegaConf.to_container(OmegaConf.structured(MultiTaskDecodingConfig))
    )
    cfg = OmegaConf.merge(defaults, asr_model.cfg.decoding)
    with open_dict(cfg):
        if method == "sample":
            cfg.strategy = "greedy_batch"
            cfg.greedy.temperature = float(temperature)
            cfg.greedy.n_samples = int(n)
        else:
            cfg.strategy = "beam"
            cfg.beam.beam_size = 1 if method == "first_pass" else int(beam_size or n)
            # also for first_pass: the same single best beam, but returned with its score
            cfg.beam.return_best_hypothesis = False
    asr_model.change_decoding_strategy(cfg)
    if method == "sample" and n > 1:
        from nemo_neko.asr.backends.canary_sampling import install_multisample_decoding

        install_multisample_decoding(asr_model)


class CanaryBackend:
    """Canary N-best lists (see the module docstring).

    Args:
        config: backend options.
        model: an already loaded ``EncDecMultiTaskModel`` (tests, notebooks); default: load
            ``config.model``.
    """

    def __init__(self, config: CanaryConfig, model=None):
        config.validate()
        self.config = config
        import torch

        if config.device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device = config.device
        self.device = torch.device(device)
        dtype = config.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = getattr(torch, dtype)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.model = model if model is not None else load_canary(config.model, str(self.device))
        self.model = self.model.to(self.device)
        if self.dtype != torch.float32:
            self.model = self.model.to(self.dtype)
        self.model.eval()
        self._decoder = None
        self._ensure_decoding()
        if config.method == "first_pass":
            self.method = "canary-first-pass"
        elif config.method == "beam":
            self.method = f"canary-beam{config.beam_size or config.n}"
        else:
            self.method = f"canary-sample{config.n}-t{config.temperature:g}"

    def _ensure_decoding(self) -> None:
        """Configure the model's decoding for this backend, unless it still is (a model shared by
        several backends, or reconfigured by its owner, gets this backend's settings back)."""
        if self._decoder is None or self.model.decoding.decoding is not self._decoder:
            c = self.config
            set_decoding(self.model, c.method, c.n, c.beam_size, c.temperature)
            self._decoder = self.model.decoding.decoding

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> CanaryBackend:
        return cls(config_from_options(CanaryConfig, options, "canary"))

    def describe(self) -> dict[str, Any]:
        out = asdict(self.config)
        out.update(backend="canary", device_type=self.device.type, dtype=str(self.dtype))
        out.pop("device")
        out.pop("threads")
        return out

    def _transcribe_config(self, batch_size: int):
        from nemo.collections.asr.models.aed_multitask_models import MultiTaskTranscriptionConfig

        prompt = {
            "source_lang": self.config.source_lang,
            "target_lang": self.config.target_lang,
            "pnc": self.config.pnc,
        }
        # enable_chunking=False: utterances are already segmented, and chunking would merge
        # hypotheses of a batch of one
        return MultiTaskTranscriptionConfig(
            batch_size=batch_size,
            return_hypotheses=True,
            num_workers=0,
            verbose=False,
            prompt=prompt,
            enable_chunking=False,
        )

    def recognize(self, audio: Sequence[np.ndarray], seed: int) -> list[NBest]:
        """N-best lists of one batch via ``model.transcribe`` (see :class:`Backend`)."""
        import torch

        if not audio:
            return []
        self._ensure_decoding()
        torch.manual_seed(seed)
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in audio]
        with torch.inference_mode():
            outputs = self.model.transcribe(
                arrays, override_config=self._transcribe_config(len(arrays))
            )
        if len(outputs) != len(arrays):
            raise RuntimeError(
                f"transcribe returned {len(outputs)} results for {len(arrays)} inputs"
            )
        results = []
        for out in outputs:
            hyps = out if isinstance(out, list) else [out]
            texts = [h.text for h in hyps]
            if self.config.method == "sample":
                results.append(NBest.of(texts))
            else:
                results.append(NBest.of(texts, [_score(h.score) for h in hyps]))
        return results


def _score(value) -> float:
    """A hypothesis score as a float (NeMo gives floats or 0-d tensors)."""
    return float(value.item() if hasattr(value, "item") else value)
