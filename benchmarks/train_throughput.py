"""Training throughput: NeKo on Megatron-Core vs Hugging Face's MixtralForCausalLM, two shapes.

Shapes, each with the same dimensions (layers, hidden, heads, KV heads, head dim, experts, top-k,
expert FFN, vocabulary, tied embeddings), the same packed batches of the HyPoradise sample and the
same optimizer (AdamW, clip 1.0), fp32 on this machine's CPU:

* ``tiny``: the from-scratch test model (4 layers, h128, 8 x 256 experts, vocabulary 4096);
* ``smollm2``: the embedded default's widths, SmolLM2-135M upcycled to 8 experts (h576, 9 heads
  of 64 with 3 KV heads, 8 x 1536 experts, vocabulary 49,152, tied embeddings, RoPE base 10^5),
  ``--smollm2-layers`` MoE layers deep, every parameter trained.

Both frameworks take their fast paths: NeKo its defaults (SDPA core attention, grouped-GEMM
experts, the output layer on the loss positions only, foreach AdamW and clipping), HF its
defaults (SDPA, its experts implementation). Steps alternate (HF, NeKo, HF, ...) after a
warm-up, so load on the machine hits both; the median tokens/s of each and the ratio are printed
(goal: >= 1.2 at both shapes, stretch 1.5). HF runs without its load-balancing loss (its
implementation assumes 2-D attention masks and the packed batches need the block-diagonal 4-D
one), which only makes its steps cheaper.

Run::

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --shapes tiny --steps 8 --json out.json
    python benchmarks/train_throughput.py --override model.local_attention=megatron   # Megatron's own
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|apex).*")

SHAPES = {
    "tiny": [],
    "smollm2": [
        "model.name=smollm2-8x",
        "model.hidden_size=576",
        "model.num_attention_heads=9",
        "model.num_query_groups=3",
        "model.kv_channels=64",
        "model.ffn_hidden_size=1536",
        "model.moe_ffn_hidden_size=1536",
        "model.vocab_size=49152",
        "model.rotary_base=100000",
        "model.layernorm_epsilon=1e-5",
        "model.share_embeddings_and_output_weights=true",
        "train.lr=1e-4",
        "train.min_lr=0",
    ],
}
"""Hydra overrides of each shape over the tiny config (``--smollm2-layers`` sets the depth)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=6, help="timed steps of each (after 1 warm-up)"
    )
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--smollm2-layers", type=int, default=4)
    parser.add_argument(
        "--override", action="append", default=[], help="Hydra override of the run config"
    )
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def build_trainer(overrides: list[str], run_dir: Path):
    from hydra import compose, initialize_config_dir

    from nemo_neko.config import register_configs, save_run_config, to_run_config
    from nemo_neko.testing.runs import CONF_DIR
    from nemo_neko.train.loop import Trainer

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(
            config_name="config",
            overrides=[
                "model=tiny",
                f"run_dir={run_dir}",
                "train.tensorboard=false",
                *overrides,
            ],
        )
    save_run_config(cfg, run_dir / "config.yaml")
    return Trainer(to_run_config(cfg), run_dir)


def hf_mixtral(run, vocab_size: int):
    """MixtralForCausalLM with the run's model dimensions."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    m = run.model
    config = MixtralConfig(
        vocab_size=vocab_size,
        hidden_size=m.hidden_size,
        intermediate_size=m.moe_ffn_hidden_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_query_groups or m.num_attention_heads,
        head_dim=m.head_dim,
        num_local_experts=m.num_experts,
        num_experts_per_tok=m.moe_router_topk,
        max_position_embeddings=m.max_position_embeddings,
        rope_theta=m.rotary_base,
        rms_norm_eps=m.layernorm_epsilon,
        tie_word_embeddings=m.share_embeddings_and_output_weights,
        # HF's load-balancing loss assumes 2-D attention masks: left out, which only spares HF work
        output_router_logits=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return MixtralForCausalLM(config).float()


def hf_step(model, optimizer, micro_batches, clip: float) -> None:
    import torch

    optimizer.zero_grad(set_to_none=True)
    total = sum(float(b["loss_mask"].sum()) for b in micro_batches)
    for batch in micro_batches:
        labels = torch.from_numpy(batch["labels"]).clone()
        mask = torch.from_numpy(batch["loss_mask"]) > 0
        seg = torch.from_numpy(batch["segment_ids"])
        allowed = (seg[:, :, None] == seg[:, None, :]) & torch.ones(
            seg.shape[1], seg.shape[1], dtype=torch.bool
        ).tril()
        allowed |= torch.eye(seg.shape[1], dtype=torch.bool)
        out = model(
            input_ids=torch.from_numpy(batch["input_ids"]),
            position_ids=torch.from_numpy(batch["position_ids"]),
            attention_mask=allowed[:, None],  # the same block-diagonal causal mask
        )
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        nll = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        loss = (nll * mask).sum() / total
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()


def measure(shape: str, overrides: list[str], steps: int) -> dict:
    """Alternating HF and NeKo steps on ``shape``; median tokens/s of each."""
    import torch
    import transformers

    from nemo_neko.compat.megatron import MCORE_VERSION
    from nemo_neko.parallel import destroy_parallel

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(overrides, Path(tmp))
        run = trainer.run
        model = hf_mixtral(run, trainer.model.vocab_size)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=run.train.lr, weight_decay=run.train.weight_decay
        )
        tokens = trainer.plan.tokens_per_step
        timings = {"megatron": [], "hf": []}
        for step in range(steps + 1):
            micro = trainer.schedule.micro_batches(trainer.step)
            start = time.perf_counter()
            hf_step(model, optimizer, micro, run.train.clip_grad)
            hf_seconds = time.perf_counter() - start
            start = time.perf_counter()
            trainer.train_step()
            neko_seconds = time.perf_counter() - start
            if step:
                timings["hf"].append(hf_seconds)
                timings["megatron"].append(neko_seconds)
        destroy_parallel()
    neko = tokens / statistics.median(timings["megatron"])
    hf = tokens / statistics.median(timings["hf"])
    m = run.model
    return {
        "shape": shape,
        "dims": f"{m.num_layers}L h{m.hidden_size} {m.num_attention_heads}/{m.query_groups} heads "
        f"{m.num_experts}x{m.moe_ffn_hidden_size} top{m.moe_router_topk} vocab {m.vocab_size or trainer.tokenizer.vocab_size}",
        "tokens_per_step": tokens,
        "threads": torch.get_num_threads(),
        "megatron_core": str(MCORE_VERSION),
        "transformers": transformers.__version__,
        "neko_megatron_tokens_per_s": round(neko),
        "hf_mixtral_tokens_per_s": round(hf),
        "neko_seconds_per_step": [round(t, 4) for t in timings["megatron"]],
        "hf_seconds_per_step": [round(t, 4) for t in timings["hf"]],
        "ratio": round(neko / hf, 3),
    }


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    os.environ.setdefault("MASTER_PORT", "29611")
    results = []
    for shape in args.shapes:
        overrides = list(SHAPES[shape])
        if shape == "smollm2":
            overrides.append(f"model.num_layers={args.smollm2_layers}")
        figures = measure(shape, overrides + args.override, args.steps)
        results.append(figures)
        print(
            f"{shape}: {figures['dims']}, {figures['tokens_per_step']} tokens per step, fp32, "
            f"{figures['threads']} CPU threads"
        )
        print(
            f"  NeKo on Megatron-Core {figures['megatron_core']}: "
            f"{figures['neko_megatron_tokens_per_s']:,} tokens/s (median of {args.steps})"
        )
        print(
            f"  HF MixtralForCausalLM {figures['transformers']}: "
            f"{figures['hf_mixtral_tokens_per_s']:,} tokens/s"
        )
        print(f"  ratio Megatron / HF = {figures['ratio']} (goal >= 1.2)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def tiny_training_tokens_per_s(mixture, tokenizer, steps: int = 5) -> float:
    """Tiny NeKo training tokens/s on this machine (used by benchmarks/data_pipeline.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MASTER_PORT", "29612")
        trainer = build_trainer([], Path(tmp))
        timings = []
        for step in range(steps + 1):
            start = time.perf_counter()
            trainer.train_step()
            if step:
                timings.append(time.perf_counter() - start)
        from nemo_neko.parallel import destroy_parallel

        destroy_parallel()
        return trainer.plan.tokens_per_step / statistics.median(timings)


if __name__ == "__main__":
    main()
