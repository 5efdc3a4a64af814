"""Evaluation CLI: leaderboard scoring and the correction report.

Score Open ASR Leaderboard result manifests (files named
``MODEL_<model>_DATASET_<dataset>_<split>.jsonl``, directories of them, or ``name=path``)::

    python -m nemo_neko.eval score results/ --protocol esb2024
    python -m nemo_neko.eval score results/ --protocol oal2026 --json s.json --markdown s.md
    python -m nemo_neko.eval score ami=ami.jsonl earnings22=e22.jsonl --protocol oal2026

Report what correction achieved on correction records (plus model predictions, JSONL
``{"id": ..., "prediction": ...}``)::

    python -m nemo_neko.eval report nemo_neko/assets/hyporadise/test/*.jsonl.gz
    python -m nemo_neko.eval report records.jsonl --predictions preds.jsonl \\
        --json report.json --markdown report.md --png report.png
    python -m nemo_neko.eval report records.jsonl --predictions preds.jsonl --missing-as-empty

How far a run's inference routing follows its training assignment (specialisation per MoE
layer, zero-shot sets)::

    python -m nemo_neko.eval routing runs/neko-tiny --json routing.json --markdown routing.md

Correct records with a trained run (greedy decoding, KV cache; resumable)::

    python -m nemo_neko.eval correct --run-dir runs/neko-tiny
    python -m nemo_neko.eval correct --run-dir runs/neko-tiny --records r.jsonl --out preds.jsonl
    torchrun --standalone --nproc_per_node 4 -m nemo_neko.eval correct --run-dir runs/neko-tiny \\
        --tensor-parallel 2 --expert-parallel 2

The Open ASR Leaderboard in one command (first pass, N-best, correction, manifests, score)::

    python -m nemo_neko.eval leaderboard --run-dir runs/neko-8x7b \
        --sets data/asr/test/ --first-pass canary --nbest-backend canary --protocol oal2026

or through an OpenAI-compatible server serving the run's exported model (the same prompts, sent
as text to /v1/completions; see nemo_neko.inference.openai_engine)::

    python -m nemo_neko.eval correct --run-dir runs/neko-tiny --engine openai \\
        --base-url http://localhost:8000/v1 [--served-model NAME] [--concurrency 4]

Exit status: 0 on success, 2 on bad input (the message names file, line and field).
``--help`` imports nothing heavy (no torch, no Megatron).
"""

from __future__ import annotations

import argparse
import sys

from nemo_neko.eval.normalizer import known_normalizers
from nemo_neko.eval.protocols import PROTOCOLS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nemo_neko.eval",
        description="Leaderboard-compatible ASR scoring and the NeKo correction report.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser(
        "score",
        help="score Open ASR Leaderboard result manifests",
        description="WER per dataset and the composite (unweighted mean), RTFx, as the "
        "Open ASR Leaderboard computes them.",
    )
    score.add_argument(
        "inputs",
        nargs="+",
        help="MODEL_<model>_DATASET_<dataset>_<split>.jsonl files, directories of them, or "
        "name=path pairs",
    )
    score.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default="oal2026",
        help="esb2024: the paper-era leaderboard (Whisper normaliser, jiwer); oal2026: the "
        "current one (its normaliser, chunk merging, kaldialign with merged compounds). "
        "Default: %(default)s",
    )
    score.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    score.add_argument("--markdown", metavar="FILE", help="also write markdown tables")
    score.set_defaults(run=run_score)

    report = sub.add_parser(
        "report",
        help="baseline, oracles and corrected scores of correction records",
        description="Per dataset and task: baseline, N-best oracle, compositional oracle, "
        "corrected score and relative gain (WER for asr/ocr/tec, BLEU for st/mt).",
    )
    report.add_argument("records", nargs="+", help="correction record files (.jsonl or .jsonl.gz)")
    report.add_argument(
        "--predictions",
        nargs="+",
        metavar="FILE",
        help='model outputs, JSONL {"id": ..., "prediction": ...}, joined to records by id',
    )
    report.add_argument(
        "--missing-as-empty",
        action="store_true",
        help="score records without a prediction as empty output instead of failing",
    )
    report.add_argument(
        "--normalizer",
        choices=known_normalizers(),
        default="none",
        help="text normaliser for WER tasks (none: text as given, whitespace words; right for "
        "already-normalised data such as HyPoradise). BLEU always uses sacrebleu's tokeniser for "
        "the target language. Default: %(default)s",
    )
    report.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    report.add_argument("--markdown", metavar="FILE", help="also write markdown tables")
    report.add_argument("--png", metavar="FILE", help="also draw a bar chart (needs matplotlib)")
    report.add_argument(
        "--routing",
        metavar="FILE",
        help="routing.json of the correct stage: add the experts each set chose at inference "
        "(with --png, also FILE.png's neighbour <png stem>.routing.png)",
    )
    report.set_defaults(run=run_report)

    correct = sub.add_parser(
        "correct",
        help="correct records with a trained run (writes predictions JSONL, resumable)",
        description="Load a run's latest checkpoint, render the task prompts and decode greedily "
        "with a KV cache (plain top-k routing, no task ids). A rerun with the same checkpoint and "
        "settings skips ids already written; predictions of another checkpoint or other settings "
        "are moved aside and corrected afresh.",
    )
    correct.add_argument("--run-dir", required=True, help="the training run's directory")
    correct.add_argument(
        "--records", nargs="+", metavar="FILE", help="default: the run's held-out sets"
    )
    correct.add_argument("--out", metavar="FILE", help="default: <run-dir>/predictions.jsonl")
    correct.add_argument(
        "--limit-per-dataset",
        type=int,
        default=None,
        help="correct the first N records of each dataset (default: the run config's)",
    )
    correct.add_argument("--batch-size", type=int, default=None, help="local engine only")
    layout = correct.add_argument_group(
        "layout (under torchrun/srun)",
        "ranks per model replica are TP x EP; world / (TP x EP) replicas decode separate shares "
        "of the records. Default: the run config's generate.tensor_parallel / expert_parallel",
    )
    layout.add_argument("--tensor-parallel", type=int, metavar="N", help="tensor-parallel size TP")
    layout.add_argument("--expert-parallel", type=int, metavar="N", help="expert-parallel size EP")
    layout.add_argument(
        "--pipeline-parallel",
        type=int,
        metavar="N",
        help="only 1: generation does not split the model into pipeline stages",
    )
    correct.add_argument(
        "--engine",
        choices=["local", "openai"],
        default="local",
        help="local: the run's checkpoint in this process (KV cache); openai: an "
        "OpenAI-compatible server serving the run's exported model (/v1/completions, the same "
        "prompts as text). Default: %(default)s",
    )
    correct.add_argument("--base-url", metavar="URL", help="openai: e.g. http://localhost:8000/v1")
    correct.add_argument(
        "--served-model",
        metavar="NAME",
        help="openai: the model name (default: the only one served)",
    )
    correct.add_argument(
        "--api-key-env", metavar="VAR", help="openai: environment variable holding the API key"
    )
    correct.add_argument(
        "--concurrency", type=int, default=4, help="openai: requests in flight (default: 4)"
    )
    correct.add_argument(
        "--ignore-no-repeat-ngram",
        action="store_true",
        help="openai: correct although the run sets generate.no_repeat_ngram_size (no API "
        "equivalent; decoded without it)",
    )
    correct.set_defaults(run=run_correct)

    routing = sub.add_parser(
        "routing",
        help="how far inference routing follows the training assignment (specialisation)",
        description="Per MoE layer: the share of each held-out set's tokens on its training "
        "expert (chance top_k / E), the normalised mutual information between set and expert, "
        "and the experts zero-shot sets fall on.",
    )
    routing.add_argument("run_dir", metavar="RUN", help="the training run's directory")
    routing.add_argument("--routing", metavar="FILE", help="default: RUN/predictions.routing.json")
    routing.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    routing.add_argument("--markdown", metavar="FILE", help="also write markdown tables")
    routing.set_defaults(run=run_routing)

    from nemo_neko.eval.leaderboard.cli import add_parser as add_leaderboard

    add_leaderboard(sub)
    return parser


def run_correct(args) -> None:
    from nemo_neko.utils.logs import quiet_libraries

    quiet_libraries()
    if args.engine == "openai":
        if not args.base_url:
            raise ValueError("--engine openai needs --base-url (e.g. http://localhost:8000/v1)")
        from nemo_neko.inference.openai_engine import correct_records_openai

        out = correct_records_openai(
            args.run_dir,
            args.base_url,
            args.records,
            args.out,
            args.limit_per_dataset,
            served_model=args.served_model,
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
            ignore_no_repeat_ngram=args.ignore_no_repeat_ngram,
        )
        print(f"predictions: {out}")
        return
    if args.base_url:
        raise ValueError("--base-url is for --engine openai")
    from nemo_neko.inference.correct import correct_records

    out = correct_records(
        args.run_dir,
        args.records,
        args.out,
        args.limit_per_dataset,
        args.batch_size,
        tensor_parallel=args.tensor_parallel,
        expert_parallel=args.expert_parallel,
        pipeline_parallel=args.pipeline_parallel,
    )
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    if dist.is_initialized():
        from nemo_neko.parallel import destroy_parallel

        destroy_parallel()
    if rank == 0:
        print(f"predictions: {out}")


def run_score(args) -> None:
    from nemo_neko.eval import render
    from nemo_neko.eval.manifests import expand_inputs
    from nemo_neko.eval.scoring import score_sources

    result = score_sources(expand_inputs(args.inputs), args.protocol)
    print(render.score_text(result))
    if args.json:
        render.write_json(args.json, result.to_dict())
    if args.markdown:
        render.write_text(args.markdown, render.score_markdown(result))


def run_report(args) -> None:
    from nemo_neko.data.records import read_records
    from nemo_neko.eval import render
    from nemo_neko.eval.predictions import read_predictions
    from nemo_neko.eval.report import build_report

    records = read_records(args.records)
    sources: list = []
    predictions = read_predictions(args.predictions, sources=sources) if args.predictions else None
    if sources and isinstance(sources[0], dict):
        from nemo_neko.inference.provenance import describe_source

        print(f"predictions of {describe_source(sources[0])}")
    if args.missing_as_empty and predictions is None:
        raise ValueError("--missing-as-empty needs --predictions")
    report = build_report(
        records, predictions, normalizer=args.normalizer, missing_as_empty=args.missing_as_empty
    )
    routing = None
    if args.routing:
        from nemo_neko.eval.routing_report import load_routing

        routing = load_routing(args.routing)
    print(render.report_text(report))
    if routing is not None:
        from nemo_neko.eval.routing_report import routing_text

        print("\n" + routing_text(routing))
    if args.json:
        figures = report.to_dict()
        if routing is not None:
            figures["routing"] = routing.to_dict()
        render.write_json(args.json, figures)
    if args.markdown:
        text = render.report_markdown(report)
        if routing is not None:
            from nemo_neko.eval.routing_report import routing_markdown

            text += "\n" + routing_markdown(routing)
        render.write_text(args.markdown, text)
    if args.png:
        from nemo_neko.eval.chart import write_chart

        write_chart(report, args.png)
        if routing is not None:
            from pathlib import Path

            from nemo_neko.eval.routing_report import write_heatmap

            png = Path(args.png)
            write_heatmap(routing, png.with_name(png.stem + ".routing.png"))


def run_routing(args) -> None:
    from nemo_neko.eval import render
    from nemo_neko.eval.routing_analysis import analyse_run, analysis_markdown, analysis_text

    analysis = analyse_run(args.run_dir, args.routing)
    print(analysis_text(analysis))
    if args.json:
        render.write_json(args.json, analysis.to_dict())
    if args.markdown:
        render.write_text(args.markdown, analysis_markdown(analysis))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
