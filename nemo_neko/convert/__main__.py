"""Hugging Face checkpoints in and out of NeKo, and sparse upcycling.

    # Hugging Face -> Megatron distributed checkpoint (+ tokenizer), checked for a layout
    python -m nemo_neko.convert import --hf Mixtral-8x7B-v0.1 --out ckpt/8x7b --model 8x7b
    python -m nemo_neko.convert import --hf Qwen1.5-MoE-A2.7B --out ckpt/qwen --expert 4
    # a GGUF file (llama.cpp; Llama architecture, dequantised) in the same way
    python -m nemo_neko.convert import --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out ckpt/smollm2

    # a dense model -> an N-expert MoE (Gemma-2B -> 8x2B, the paper's recipe)
    python -m nemo_neko.convert upcycle --hf gemma-2b --out ckpt/8x2b --num-experts 8 --topk 2 \\
        --router-init normal --router-std 0.02 --noise 0.0 --model 8x2b

    # a run's base model (base.source): fetched, imported, upcycled once into the cache
    python -m nemo_neko.convert prepare --run-dir runs/neko-smollm2-8x

    # a trained run (or any NeKo checkpoint) -> Hugging Face folder for transformers / vLLM
    python -m nemo_neko.convert export --checkpoint runs/neko-8x7b --out neko-8x7b-hf

Then train from the import: ``python launch/run.py model=8x7b train.init_from=ckpt/8x7b
data.tokenizer.path=ckpt/8x7b/tokenizer``. ``--help`` imports neither torch nor Megatron.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings

UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


def byte_size(text: str) -> int:
    """``5GB``, ``500MB``, ``2GiB`` or a number of bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5GB, 500MB, 2GiB)")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def _layout_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "layout the checkpoint is checked for (it loads under any; the vocabulary is padded to "
        "128 x TP as training does). Default: --model's layout, else 1"
    )
    group.add_argument("--tensor", type=int, help="tensor-parallel size TP")
    group.add_argument("--pipeline", type=int, help="pipeline-parallel size PP")
    group.add_argument("--expert", type=int, help="expert-parallel size EP")


def _import_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hf", help="Hugging Face model folder (safetensors)")
    source.add_argument(
        "--gguf", help="GGUF file (llama.cpp; Llama architecture, F32/F16/BF16/Q8_0/Q4_x)"
    )
    parser.add_argument("--out", required=True, help="output folder (Megatron checkpoint)")
    parser.add_argument(
        "--model",
        help="conf/model name to check the checkpoint against (default: the model config.json "
        "describes)",
    )
    parser.add_argument("--conf-dir", help="Hydra conf folder (default: the repository's conf/)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: the source's")
    _layout_options(parser)
    _common(parser)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nemo_neko.convert",
        description="Hugging Face checkpoints in and out of NeKo (Megatron-Core), and sparse "
        "upcycling of dense models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "import",
        help="Hugging Face (Mixtral, Qwen2-MoE, Gemma, Mistral, Llama) -> Megatron checkpoint",
    )
    _import_options(p)

    p = sub.add_parser("upcycle", help="dense Hugging Face model -> N-expert MoE checkpoint")
    _import_options(p)
    p.add_argument("--num-experts", type=int, default=8)
    p.add_argument("--topk", type=int, default=2)
    p.add_argument("--router-init", choices=["normal", "zeros"], default="normal")
    p.add_argument("--router-std", type=float, default=0.02, help="std of a normal router init")
    p.add_argument("--noise", type=float, default=0.0, help="std of noise added to each expert")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--layers",
        type=_layer_list,
        help="layers to upcycle, 0-based, e.g. 26-29 or 0,2,4 (default: every layer)",
    )

    p = sub.add_parser(
        "prepare",
        help="a run's base model: fetch, import and upcycle base.source into the cache (once)",
    )
    p.add_argument("--run-dir", required=True, help="the run's folder (with config.yaml)")

    p = sub.add_parser("export", help="NeKo checkpoint -> Hugging Face folder")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="an imported folder, a run folder, its checkpoints/ folder or a step_N checkpoint",
    )
    p.add_argument("--out", required=True, help="Hugging Face folder to write")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: as stored")
    p.add_argument(
        "--architecture",
        choices=["mixtral", "qwen2_moe", "gemma", "mistral", "llama"],
        help="Hugging Face model_type to write (default: the source's, else one that fits)",
    )
    p.add_argument("--vocab-size", type=int, help="default: the model's, else the tokenizer's")
    p.add_argument("--max-shard-size", type=byte_size, default="5GB", help="default: 5GB")
    _common(p)
    return parser


def _layer_list(text: str) -> list[int]:
    """``26-29``, ``0,2,4`` or a mix (``0,10-12``) -> sorted layer indices."""
    layers: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise argparse.ArgumentTypeError(f"not a layer list: {text!r} (e.g. 26-29 or 0,2,4)")
        layers.update(range(int(first), int(last or first) + 1))
    return sorted(layers)


def _layout(args):
    from nemo_neko.parallel import ParallelLayout

    if args.tensor is None and args.pipeline is None and args.expert is None:
        return None  # --model's layout, else TP = PP = EP = 1
    tensor = args.tensor or 1
    return ParallelLayout(
        tensor=tensor,
        pipeline=args.pipeline or 1,
        expert=args.expert or 1,
        sequence_parallel=tensor > 1,
    )


def run(args) -> str:
    if args.command == "prepare":
        from nemo_neko.config import load_run_config
        from nemo_neko.convert.base_models import prepare_base
        from nemo_neko.paths import RunPaths

        run_config = load_run_config(RunPaths(args.run_dir).config)
        if run_config.base.source is None:
            return "prepare: no base.source in the run config, nothing to do"
        record = prepare_base(run_config, args.run_dir)
        return f"prepare: the run starts from {record['checkpoint']}"
    if args.command == "export":
        from nemo_neko.convert.exporter import export_hf

        out = export_hf(
            args.checkpoint,
            args.out,
            dtype=args.dtype,
            architecture=args.architecture,
            vocab_size=args.vocab_size,
            max_shard_bytes=args.max_shard_size,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
        return f"exported {args.checkpoint} -> {out}"
    from nemo_neko.convert.importer import import_hf, load_model_config
    from nemo_neko.convert.upcycle import UpcycleConfig

    upcycle = None
    if args.command == "upcycle":
        upcycle = UpcycleConfig(
            num_experts=args.num_experts,
            topk=args.topk,
            router_init=args.router_init,
            router_std=args.router_std,
            noise=args.noise,
            seed=args.seed,
            layers=args.layers,
        )
    source = args.hf or args.gguf
    out = import_hf(
        source,
        args.out,
        layout=_layout(args),
        dtype=args.dtype,
        model_name=args.model,
        conf_dir=args.conf_dir,
        upcycle=upcycle,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    model = load_model_config(out / "neko_model.yaml")
    done = {"import": "imported", "upcycle": "upcycled"}[args.command]
    tokenizer = out / "tokenizer"
    hint = f" data.tokenizer.path={tokenizer}" if tokenizer.exists() else ""
    return (
        f"{done} {source} -> {out} ({model.num_layers} layers, {model.num_experts} experts, "
        f"{model.params_dtype})\ntrain from it: python launch/run.py "
        f"model={args.model or '<name>'} train.init_from={out}{hint}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|apex).*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*full scope is deprecated.*")
    from nemo_neko.convert.memory import return_freed_memory

    return_freed_memory()
    try:
        print(run(args))
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
