"""Decoding speed: greedy generation with the KV cache against full recomputation.

The tiny NeKo model (random weights, EOS never produced so every row generates exactly
``--new-tokens`` tokens) decodes the same prompts, rendered from held-out HyPoradise records,
with :class:`~nemo_neko.inference.generate.KVCacheDecoder` and with
:class:`~nemo_neko.inference.generate.RecomputeDecoder` in one run; prints generated tokens/s of
each (median over repeats) and the ratio (goal: >= 3x at 64 new tokens).

Run::

    python benchmarks/generation.py
    python benchmarks/generation.py --new-tokens 64 --prompts 16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|apex).*")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    from hydra import compose, initialize_config_dir

    from nemo_neko.config import register_configs, to_run_config
    from nemo_neko.data.records import read_records
    from nemo_neko.data.sample_data import sample_paths
    from nemo_neko.data.samples import SampleBuilder
    from nemo_neko.data.tokenizer import train_bpe_tokenizer
    from nemo_neko.inference.generate import KVCacheDecoder, RecomputeDecoder
    from nemo_neko.parallel import ParallelLayout, destroy_parallel, initialize_parallel
    from nemo_neko.tasks import get_task
    from nemo_neko.testing.runs import CONF_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        run = to_run_config(compose(config_name="config", overrides=["model=tiny"]))
    records = read_records(sample_paths("test", ("atis",)))[: args.prompts]
    tokenizer = train_bpe_tokenizer(
        [
            get_task(r.task).prompt(r) + "\n" + r.reference
            for r in read_records(sample_paths("train", ("atis",)))
        ],
        vocab_size=run.data.tokenizer.train_vocab_size,
    )
    os.environ.setdefault("MASTER_PORT", "29613")
    parallel = initialize_parallel(ParallelLayout(), seed=0, num_experts=run.model.num_experts)
    run.model.parallel = ParallelLayout()
    (model,) = run.model.build(
        routing=run.task_routing(),
        parallel=parallel,
        tokenizer_vocab=tokenizer.vocab_size,
        max_sequence_length=run.data.seq_length,
        use_te=False,
    ).chunks
    model.eval()
    builder = SampleBuilder(tokenizer, run.data.seq_length)
    prompts = [builder.inference_prompt(r, reserve=args.new_tokens + 1) for r in records]
    limits = [args.new_tokens] * len(prompts)
    decoders = {
        "kv_cache": KVCacheDecoder(model, eos_id=-1, pad_id=tokenizer.pad_id),
        "recompute": RecomputeDecoder(model, eos_id=-1, pad_id=tokenizer.pad_id),
    }
    timings = {name: [] for name in decoders}
    outputs = {}
    for _ in range(args.repeats):
        for name, decoder in decoders.items():
            start = time.perf_counter()
            outputs[name] = decoder.generate(prompts, limits, args.batch_size)
            timings[name].append(time.perf_counter() - start)
    destroy_parallel()
    same = [g.tokens for g in outputs["kv_cache"]] == [g.tokens for g in outputs["recompute"]]
    generated = sum(len(g.tokens) for g in outputs["kv_cache"])
    rates = {name: generated / statistics.median(t) for name, t in timings.items()}
    figures = {
        "prompts": len(prompts),
        "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
        "new_tokens": args.new_tokens,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "kv_cache_tokens_per_s": round(rates["kv_cache"], 1),
        "recompute_tokens_per_s": round(rates["recompute"], 1),
        "ratio": round(rates["kv_cache"] / rates["recompute"], 2),
        "identical_outputs": same,
    }
    print(
        f"{len(prompts)} prompts of ~{figures['mean_prompt_tokens']} tokens, {args.new_tokens} new tokens each, "
        f"batch {args.batch_size}, {figures['threads']} CPU threads"
    )
    print(
        f"  KV cache      {figures['kv_cache_tokens_per_s']:,.1f} tokens/s (median of {args.repeats})"
    )
    print(f"  recomputation {figures['recompute_tokens_per_s']:,.1f} tokens/s")
    print(f"  ratio {figures['ratio']}x (goal >= 3x); identical outputs: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
