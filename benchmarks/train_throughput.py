"""Training throughput: the tiny NeKo on Megatron-Core vs Hugging Face's MixtralForCausalLM.

Same dimensions (layers, hidden, heads, KV heads, experts, top-k, expert FFN, vocabulary, tied
embeddings), same packed batches of the HyPoradise sample, same optimizer (AdamW, clip 1.0),
fp32 on this machine's CPU, in one run, alternating the two step by step; prints the median
tokens/s of each and the ratio (goal: >= 1.0 on CPU). The paper trained with HF + DeepSpeed.
HF runs without its load-balancing loss (its implementation assumes 2-D attention masks and the
packed batches need the block-diagonal 4-D one), which only makes its steps cheaper.

Run::

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --steps 8 --json out.json
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=6, help="timed steps of each (after 1 warm-up)"
    )
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
            overrides=[f"run_dir={run_dir}", "train.tensorboard=false", *overrides],
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


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from nemo_neko.compat.megatron import MCORE_VERSION

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MASTER_PORT", "29611")
        trainer = build_trainer(args.override, Path(tmp))
        run = trainer.run
        model = hf_mixtral(run, trainer.vocab_size)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=run.train.lr, weight_decay=run.train.weight_decay
        )
        tokens = trainer.plan.tokens_per_step
        timings = {"megatron": [], "hf": []}
        for step in range(args.steps + 1):
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
        from nemo_neko.parallel import destroy_parallel

        destroy_parallel()
    neko = tokens / statistics.median(timings["megatron"])
    hf = tokens / statistics.median(timings["hf"])
    import transformers

    figures = {
        "model": run.model.name,
        "dims": f"{run.model.num_layers}L h{run.model.hidden_size} {run.model.num_experts}x{run.model.moe_ffn_hidden_size} top{run.model.moe_router_topk}",
        "tokens_per_step": tokens,
        "threads": torch.get_num_threads(),
        "megatron_core": str(MCORE_VERSION),
        "transformers": transformers.__version__,
        "neko_megatron_tokens_per_s": round(neko),
        "hf_mixtral_tokens_per_s": round(hf),
        "ratio": round(neko / hf, 3),
    }
    print(f"{figures['dims']}, {tokens} tokens per step, fp32, {figures['threads']} CPU threads")
    print(
        f"  NeKo on Megatron-Core {figures['megatron_core']}: {neko:,.0f} tokens/s (median of {args.steps})"
    )
    print(f"  HF MixtralForCausalLM {figures['transformers']}: {hf:,.0f} tokens/s")
    print(f"  ratio Megatron / HF = {figures['ratio']} (goal >= 1.0)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


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
