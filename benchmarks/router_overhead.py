"""Cost of task-guided routing: NeKo MoE layer vs Megatron's stock MoE layer, same weights.

Measures MoELayer forward + backward (training mode) at 4096 tokens, hidden 256, 8 experts,
top-2 by default, alternating the two layers repeat by repeat in one process, and prints the
median time and TFLOPS of each and their time ratio (target: <= 1.10 on CPU, <= 1.03 on a GPU).

* stock: ``MoELayer`` + ``TopKRouter`` + Megatron's dispatcher and experts, as Megatron builds
  them (local modules, or Transformer Engine's with ``--spec te``, grouped GEMM optionally);
* NeKo: ``NeKoMoELayer`` + ``TaskGuidedRouter`` with every token labelled (forcing on) + the
  task-aware dispatcher counting routing statistics, on the same experts.

FLOPs count the expert GEMMs (gated: ``3 x 2 x tokens x topk x 3 x hidden x ffn`` for forward
and backward) and the router GEMM; dispatch and routing are what the ratio measures.

Run::

    python benchmarks/router_overhead.py                    # CPU defaults
    python benchmarks/router_overhead.py --device cuda --preset mixtral-8x7b   # the GPU check
    python benchmarks/router_overhead.py --json out.json    # also write the figures
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per forward (S x B)")
    parser.add_argument("--batch", type=int, default=4, help="micro-batch size B")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--ffn", type=int, default=1024, help="expert FFN hidden size")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--topk", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=5, help="datasets mapped to experts")
    parser.add_argument("--dispatcher", default="alltoall", choices=["alltoall", "allgather"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16"],
        help="default: float32 on CPU, bfloat16 on CUDA",
    )
    parser.add_argument(
        "--spec",
        default="auto",
        choices=["auto", "local", "te"],
        help="layer modules: local, Transformer Engine's, or auto (TE with CUDA when it imports)",
    )
    parser.add_argument(
        "--grouped-gemm",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="grouped-GEMM experts (default: on with Transformer Engine)",
    )
    parser.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="layer shapes of a model (overrides --tokens/--batch/--hidden/--ffn/--experts/--topk)",
    )
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    for key, value in PRESETS.get(args.preset, {}).items():
        setattr(args, key, value)
    return args


PRESETS = {
    "mixtral-8x7b": dict(tokens=8192, batch=2, hidden=4096, ffn=14336, experts=8, topk=2),
}
"""Layer shapes of the shipped models (Mixtral 8x7B: micro-batches of 2 x 4096 tokens)."""


def moe_flops(tokens: int, hidden: int, ffn: int, experts: int, topk: int) -> float:
    """Forward + backward FLOPs of a gated MoE layer's GEMMs (experts and router)."""
    expert_macs = tokens * topk * 3 * hidden * ffn
    router_macs = tokens * hidden * experts
    return 3 * 2 * (expert_macs + router_macs)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from nemo_neko.compat import megatron as mc
    from nemo_neko.moe import TaskRoutingConfig, task_routing_scope
    from nemo_neko.moe.spec import neko_moe_spec, resolve_use_te
    from nemo_neko.parallel import ParallelLayout, destroy_parallel, initialize_parallel
    from nemo_neko.testing.models import tiny_moe_config

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible")
    initialize_parallel(ParallelLayout(), num_experts=args.experts)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))

    choice = {"auto": None, "local": False, "te": True}[args.spec]
    use_te = resolve_use_te(choice) if args.device == "cuda" else resolve_use_te(bool(choice))
    grouped = use_te if args.grouped_gemm is None else args.grouped_gemm
    config = tiny_moe_config(
        moe_grouped_gemm=bool(grouped),
        num_layers=1,
        hidden_size=args.hidden,
        num_attention_heads=8,
        ffn_hidden_size=args.ffn,
        moe_ffn_hidden_size=args.ffn,
        num_moe_experts=args.experts,
        moe_router_topk=args.topk,
        moe_token_dispatcher_type=args.dispatcher,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        moe_router_dtype="fp32",
    )
    routing = TaskRoutingConfig.for_datasets([f"task{i}" for i in range(args.tasks)], args.experts)
    stock_spec = mc.moe_mlp_spec(use_te, args.experts, grouped)  # pure Megatron
    stock = mc.build_moe_module(stock_spec, config)
    stock.set_layer_number(1)
    neko_spec = neko_moe_spec(  # the same experts: only routing and dispatch differ
        routing, args.experts, use_te=use_te, moe_grouped_gemm=grouped, local_experts="sequential"
    )
    neko = mc.build_moe_module(neko_spec, config)
    neko.set_layer_number(1)
    neko.load_state_dict(stock.state_dict(), strict=False)  # same weights (TE extra states aside)
    stock.to(device).train()
    neko.to(device).train()

    seq = args.tokens // args.batch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(seq, args.batch, args.hidden, generator=gen).to(device, dtype)
    grad_out = torch.randn(seq, args.batch, args.hidden, generator=gen).to(device, dtype)
    task_ids = torch.randint(0, args.tasks, (args.batch, seq), generator=gen)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(layer, ids):
        inp = x.detach().requires_grad_(True)
        sync()
        start = time.perf_counter()
        with task_routing_scope(ids):
            out, _ = layer(inp)
        out.backward(grad_out)
        sync()
        elapsed = time.perf_counter() - start
        layer.zero_grad(set_to_none=True)
        mc.clear_aux_losses()
        return elapsed

    timings = {"stock": [], "neko": []}
    for i in range(args.warmup + args.repeats):
        pair = [("stock", stock, None), ("neko", neko, task_ids)]
        if i % 2:
            pair.reverse()  # alternate the order so neither always runs second
        for name, layer, ids in pair:
            elapsed = step(layer, ids)
            if i >= args.warmup:
                timings[name].append(elapsed)

    # guard against timing a no-op: every NeKo step must have forced one expert per token
    from nemo_neko.moe.stats import collect_routing_stats, forced_share

    counts = collect_routing_stats([neko])[1]
    steps = args.warmup + args.repeats
    if (
        int(counts.sum()) != steps * seq * args.batch * args.topk
        or forced_share(counts) != 1 / args.topk
    ):
        sys.exit(f"task-guided routing did not run as expected: counts {counts.sum()}")

    medians = {name: statistics.median(values) for name, values in timings.items()}
    ratio = medians["neko"] / medians["stock"]
    flops = moe_flops(seq * args.batch, args.hidden, args.ffn, args.experts, args.topk)
    tflops = {name: flops / seconds / 1e12 for name, seconds in medians.items()}
    figures = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "megatron_core": str(mc.MCORE_VERSION),
        "torch": torch.__version__,
        "tokens": seq * args.batch,
        "hidden": args.hidden,
        "ffn": args.ffn,
        "experts": args.experts,
        "topk": args.topk,
        "dispatcher": args.dispatcher,
        "spec": "transformer_engine" if use_te else "local",
        "grouped_gemm": bool(grouped),
        "tflops_stock": round(tflops["stock"], 6),
        "tflops_neko": round(tflops["neko"], 6),
        "dtype": str(dtype).replace("torch.", ""),
        "repeats": args.repeats,
        "median_stock_ms": round(medians["stock"] * 1e3, 3),
        "median_neko_ms": round(medians["neko"] * 1e3, 3),
        "ratio": round(ratio, 4),
        "forced_share": forced_share(counts),
        "target": 1.03 if device.type == "cuda" else 1.10,
    }
    print(
        f"MoELayer fwd+bwd, {figures['tokens']} tokens, hidden {args.hidden}, ffn {args.ffn}, "
        f"{args.experts} experts, top-{args.topk}, {args.dispatcher}, {figures['dtype']} on "
        f"{figures['device']} ({figures['threads']} threads), megatron-core {figures['megatron_core']}"
    )
    print(
        f"  {figures['spec']} modules, grouped GEMM {figures['grouped_gemm']}; "
        f"stock router  median {figures['median_stock_ms']:.1f} ms over {args.repeats} repeats, "
        f"{figures['tflops_stock']:.2f} TFLOPS"
    )
    print(
        f"  task-guided   median {figures['median_neko_ms']:.1f} ms over {args.repeats} repeats, "
        f"{figures['tflops_neko']:.2f} TFLOPS "
        f"(forced share of routed tokens {figures['forced_share']:.2f})"
    )
    verdict = "within" if ratio <= figures["target"] else "ABOVE"
    print(f"  ratio task-guided / stock = {ratio:.3f} ({verdict} target {figures['target']})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    destroy_parallel()
    return figures


if __name__ == "__main__":
    main()
