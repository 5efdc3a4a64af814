"""Peak memory of the Hugging Face -> Megatron import (and of the export back), streaming.

Writes a synthetic Mixtral-like checkpoint in several safetensors shards (bf16, random values:
a padded-vocabulary embedding and ``lm_head`` as the largest tensors, 8 experts per layer),
several times larger than one shard, then imports it in a fresh subprocess and reads that
process's peak resident memory (``VmHWM``, Linux) against its baseline (the resident memory after
torch, Megatron-Core and the converter are imported and the process group is up, before any
tensor is read). Target: ``peak - baseline < 2 x the largest single tensor``. The export back
to Hugging Face is measured the same way (reported, same target).

Run::

    python benchmarks/convert_memory.py
    python benchmarks/convert_memory.py --hidden 2048 --vocab 32000 --layers 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32003, help="padded to 32128 on import")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--ffn", type=int, default=1536)
    parser.add_argument("--shard-mb", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--child", nargs=3, metavar=("WHAT", "SOURCE", "OUT"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def synthesize(path: Path, args) -> dict:
    """A Mixtral-like bf16 checkpoint, written tensor by tensor; returns its figures."""
    import torch
    from transformers import MixtralConfig

    from nemo_neko.convert.safetensors_io import PlannedTensor, write_hf_weights

    heads, kv = 16, 4
    config = MixtralConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.ffn,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        num_local_experts=args.experts,
        num_experts_per_tok=2,
        max_position_embeddings=4096,
        rope_theta=1e6,
        dtype="bfloat16",
    )
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    h, d = args.hidden, args.hidden // heads
    shapes = {"model.embed_tokens.weight": (args.vocab, h)}
    for i in range(args.layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (heads * d, h),
                p + "self_attn.k_proj.weight": (kv * d, h),
                p + "self_attn.v_proj.weight": (kv * d, h),
                p + "self_attn.o_proj.weight": (h, heads * d),
                p + "post_attention_layernorm.weight": (h,),
                p + "block_sparse_moe.gate.weight": (args.experts, h),
            }
        )
        for j in range(args.experts):
            e = f"{p}block_sparse_moe.experts.{j}."
            shapes.update(
                {
                    e + "w1.weight": (args.ffn, h),
                    e + "w3.weight": (args.ffn, h),
                    e + "w2.weight": (h, args.ffn),
                }
            )
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (args.vocab, h)})
    plan = [PlannedTensor(n, torch.bfloat16, s) for n, s in shapes.items()]
    generator = torch.Generator().manual_seed(0)

    def produce(name: str):
        return (torch.randn(shapes[name], generator=generator) * 0.02).to(torch.bfloat16)

    files = write_hf_weights(path, plan, produce, max_shard_bytes=args.shard_mb * 10**6)
    sizes = [(path / f).stat().st_size for f in files]
    return {
        "tensors": len(plan),
        "total_bytes": sum(t.nbytes for t in plan),
        "largest_tensor_bytes": max(t.nbytes for t in plan),
        "shards": len(files),
        "largest_shard_bytes": max(sizes),
    }


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (VmRSS: now, VmHWM: peak of this process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def child(what: str, source: str, out: str) -> None:
    """Runs in the measured subprocess: imports first, baseline, then the conversion.

    The peak is the kernel's high-water mark of this process's resident memory (``VmHWM``),
    reset to the baseline just before converting (``clear_refs``). ``ru_maxrss`` would not do:
    a child started by fork + exec inherits its parent's maximum.
    """
    import warnings

    warnings.filterwarnings("ignore")
    import torch  # noqa: F401

    from nemo_neko.compat import megatron  # noqa: F401
    from nemo_neko.convert.exporter import export_hf
    from nemo_neko.convert.importer import import_hf
    from nemo_neko.convert.megatron_io import single_process_world
    from nemo_neko.convert.memory import return_freed_memory

    return_freed_memory()  # what python -m nemo_neko.convert does

    with single_process_world():  # the process group up front: part of the baseline
        baseline = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        start = time.perf_counter()
        if what == "import":
            import_hf(source, out, overwrite=True, progress=False)
        else:
            export_hf(source, out, overwrite=True, progress=False)
        seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    print(json.dumps({"baseline_rss": baseline, "peak_rss": peak, "seconds": seconds}))


def measure(what: str, source: Path, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", what, str(source), str(out)],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise RuntimeError(f"{what} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        child(*args.child)
        return {}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="convert_memory_"))
    try:
        figures = synthesize(work / "hf", args)
        bound = 2 * figures["largest_tensor_bytes"]
        report = {"checkpoint": figures, "bound_bytes": bound}
        for what, source, out in (
            ("import", work / "hf", work / "megatron"),
            ("export", work / "megatron", work / "hf_again"),
        ):
            runs = [measure(what, source, out) for _ in range(args.repeats)]
            growth = statistics.median(r["peak_rss"] - r["baseline_rss"] for r in runs)
            report[what] = {
                "baseline_rss": statistics.median(r["baseline_rss"] for r in runs),
                "peak_rss": statistics.median(r["peak_rss"] for r in runs),
                "peak_minus_baseline": growth,
                "ratio_to_largest_tensor": growth / figures["largest_tensor_bytes"],
                "seconds": statistics.median(r["seconds"] for r in runs),
                "pass": growth < bound,
            }
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    mib = 2**20
    print(
        f"checkpoint: {figures['total_bytes'] / mib:.0f} MiB in {figures['shards']} shards "
        f"(largest shard {figures['largest_shard_bytes'] / mib:.0f} MiB), largest tensor "
        f"{figures['largest_tensor_bytes'] / mib:.1f} MiB, bound 2 x largest = "
        f"{bound / mib:.1f} MiB"
    )
    for what in ("import", "export"):
        r = report[what]
        print(
            f"{what}: baseline {r['baseline_rss'] / mib:.0f} MiB, "
            f"peak {r['peak_rss'] / mib:.0f} MiB, "
            f"peak - baseline {r['peak_minus_baseline'] / mib:.1f} MiB = "
            f"{r['ratio_to_largest_tensor']:.2f} x largest tensor, {r['seconds']:.1f} s: "
            f"{'PASS' if r['pass'] else 'FAIL'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
