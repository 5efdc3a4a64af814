"""``python -m nemo_neko.data``: import datasets to records, inspect them, dry-run packing.

    python -m nemo_neko.data import coedit train.jsonl coedit.jsonl.gz --dataset coedit
    python -m nemo_neko.data import pleias_ocr en.parquet ocr.jsonl.gz --dataset pleias_en --option max_chars=1000
    python -m nemo_neko.data stats nemo_neko/assets/hyporadise/train/*.jsonl.gz --tokenizer runs/tok
    python -m nemo_neko.data pack atis=train/atis.jsonl.gz cv=train/cv.jsonl.gz --tokenizer runs/tok --seq-length 2048

``stats`` and ``pack`` take ``--train-tokenizer VOCAB`` instead of ``--tokenizer DIR`` to train a
byte-level BPE tokenizer on the records themselves (what the embedded default does).

Empty results are errors (exit status 2, one line naming the file): an import that yields no
record writes nothing, ``stats`` and ``pack`` refuse a file without records and ``pack`` a
mixture of no sequences; ``--allow-empty`` accepts those. A dataset whose every record is too
long for the sequence length is always an error (the message says the length it needs).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict


def key_value_option(text: str) -> tuple[str, object]:
    """argparse type of ``--option KEY=VALUE``: the value parsed as JSON, else kept as text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option takes key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


ALLOW_EMPTY = "accept an empty result (no records) instead of failing"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nemo_neko.data", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", help="convert a published dataset file into records")
    imp.add_argument("format", help="hyporadise, hypotranslate, coedit, pleias_ocr, lhotse")
    imp.add_argument("input", help="the published file")
    imp.add_argument("output", help="records file to write (.jsonl or .jsonl.gz)")
    imp.add_argument("--dataset", required=True, help="dataset name of the records")
    imp.add_argument(
        "--skip-invalid", action="store_true", help="count and report bad rows instead of stopping"
    )
    imp.add_argument(
        "--option",
        action="append",
        type=key_value_option,
        default=[],
        metavar="KEY=VALUE",
        help='importer option (JSON value), e.g. max_chars=1000, task="st"',
    )
    imp.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY)

    for name, text in (
        ("stats", "per-dataset counts, tokens, truncations, 1-best WER"),
        ("pack", "dry run of packing: sequences and efficiency"),
    ):
        cmd = sub.add_parser(name, help=text)
        if name == "stats":
            cmd.add_argument("records", nargs="+", help="record files")
        else:
            cmd.add_argument(
                "datasets", nargs="+", metavar="NAME=PATH[,PATH...]", help="mixture datasets"
            )
            cmd.add_argument("--seq-length", type=int, default=2048)
            cmd.add_argument("--epochs", type=int, default=1)
            cmd.add_argument("--seed", type=int, default=1234)
        tok = cmd.add_mutually_exclusive_group()
        tok.add_argument("--tokenizer", help="Hugging Face tokenizer directory")
        tok.add_argument(
            "--train-tokenizer",
            type=int,
            metavar="VOCAB",
            help="train a BPE tokenizer of this size",
        )
        cmd.add_argument("--max-length", type=int, default=None, help="longest sample in tokens")
        cmd.add_argument(
            "--prompt-format",
            choices=["plain", "chat"],
            default="plain",
            help="plain, or chat (the tokenizer's chat template); default: %(default)s",
        )
        cmd.add_argument("--skip-invalid", action="store_true", help="count and report bad records")
        cmd.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY)
        cmd.add_argument("--json", help="also write the figures to this file")
    return parser


def _load_tokenizer(args, records):
    from nemo_neko.data.tokenizer import TextTokenizer, train_bpe_tokenizer
    from nemo_neko.tasks import get_task

    if args.tokenizer:
        return TextTokenizer.from_dir(args.tokenizer)
    if args.train_tokenizer:
        texts = [get_task(r.task).prompt(r) + "\n" + get_task(r.task).target(r) for r in records]
        return train_bpe_tokenizer(texts, vocab_size=args.train_tokenizer)
    return None


def run_import(args) -> int:
    from nemo_neko.data.importers import ImportReport, import_records
    from nemo_neko.data.records import write_records

    report = ImportReport()
    records = import_records(
        args.format,
        args.input,
        dataset=args.dataset,
        report=report,
        skip_invalid=args.skip_invalid,
        **dict(args.option),
    )

    def checked():
        yield from records
        if not report.records and not args.allow_empty:  # raised inside the writer: no file
            if report.rejected:
                print(report.summary(), file=sys.stderr)
            raise ValueError(
                f"{args.input}: no records to import ({report.num_rejected} rejected, "
                f"{report.num_skipped} skipped); nothing written to {args.output} "
                f"(--allow-empty writes an empty file)"
            )

    count = write_records(args.output, checked())
    print(f"wrote {count} records to {args.output}")
    print(report.summary())
    return 0


def _read(paths, skip_invalid, allow_empty=False):
    """The records of ``paths``; a file without any is an error unless ``allow_empty``."""
    from nemo_neko.data.records import ReadReport, read_records

    report = ReadReport()
    records = []
    for path in paths:
        before, rejected = report.records, report.num_rejected
        records += read_records(path, skip_invalid=skip_invalid, report=report)
        if report.records == before and not allow_empty:
            if report.num_rejected:
                print(report.summary(), file=sys.stderr)
            why = (
                f"all {report.num_rejected - rejected} lines rejected" if skip_invalid else "empty"
            )
            raise ValueError(f"{path}: no records ({why}; --allow-empty accepts it)")
    if report.num_rejected:
        print(report.summary(), file=sys.stderr)
    return records


def first_best_wer(records) -> float:
    """Corpus WER (%) of the 1-best hypotheses against the targets, words split on whitespace
    (the text as given; ``python -m nemo_neko.eval report`` scores with normalisers and
    oracles)."""
    from rapidfuzz.distance import Levenshtein

    from nemo_neko.tasks import get_task

    pairs = [(get_task(r.task).target(r).split(), r.hypotheses[0].split()) for r in records]
    words = sum(len(ref) for ref, _ in pairs)
    return 100 * sum(Levenshtein.distance(ref, hyp) for ref, hyp in pairs) / max(words, 1)


def run_stats(args) -> int:
    from nemo_neko.data.samples import SampleBuilder

    records = _read(args.records, args.skip_invalid, args.allow_empty)
    tokenizer = _load_tokenizer(args, records)
    by_dataset = defaultdict(list)
    for record in records:
        by_dataset[record.dataset].append(record)
    rows = {}
    for name, group in sorted(by_dataset.items()):
        row = {"records": len(group), "tasks": sorted({r.task for r in group})}
        with_hyps = [r for r in group if r.hypotheses]
        if with_hyps:
            row["wer_1best"] = round(first_best_wer(with_hyps), 2)
        if tokenizer is not None:
            builder = SampleBuilder(tokenizer, args.max_length or 1 << 30, args.prompt_format)
            data = builder.build(group, name)
            row.update(data.stats.as_dict())
            row.pop("too_long_ids")
        rows[name] = row
    columns = [
        "records",
        "tasks",
        "wer_1best",
        "tokens",
        "target_tokens",
        "hypotheses_dropped",
        "inputs_cut",
        "too_long",
    ]
    columns = [c for c in columns if any(c in r for r in rows.values())]
    print("dataset".ljust(14) + "".join(c.rjust(20) for c in columns))
    for name, row in rows.items():
        cells = [",".join(row[c]) if c == "tasks" else str(row.get(c, "-")) for c in columns]
        print(name.ljust(14) + "".join(cell.rjust(20) for cell in cells))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


def run_pack(args) -> int:
    from nemo_neko.data.mixture import DatasetSpec, MixtureConfig, PackedMixture

    specs = []
    for item in args.datasets:
        if "=" not in item:
            raise ValueError(f"pack: dataset {item!r} must be NAME=PATH[,PATH...]")
        name, paths = item.split("=", 1)
        specs.append(DatasetSpec(name, paths.split(",")))
    records = _read([p for s in specs for p in s.paths], args.skip_invalid, args.allow_empty)
    tokenizer = _load_tokenizer(args, records)
    if tokenizer is None:
        raise ValueError("pack needs --tokenizer DIR or --train-tokenizer VOCAB")
    config = MixtureConfig(
        datasets=specs,
        epochs=args.epochs,
        seed=args.seed,
        seq_length=args.seq_length,
        max_sample_length=args.max_length,
        prompt_format=args.prompt_format,
    )
    mixture = PackedMixture.build(config, tokenizer, skip_invalid=args.skip_invalid)
    if not len(mixture) and not args.allow_empty:
        raise ValueError(
            f"pack: the mixture of {', '.join(s.name for s in specs)} has no sequences "
            f"(dataset weights and epochs give no samples; --allow-empty accepts it)"
        )
    figures = {
        "sequences": len(mixture),
        "seq_length": args.seq_length,
        "epochs": args.epochs,
        "samples": sum(len(d) for d in mixture.datasets) * args.epochs,
        "efficiency": round(mixture.efficiency(), 4),
        "truncated": sum(d.stats.truncated for d in mixture.datasets),
        "too_long": sum(len(d.stats.too_long) for d in mixture.datasets),
    }
    for key, value in figures.items():
        print(f"{key:>12}: {value}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nemo_neko.data.records import RecordError

    try:
        return {"import": run_import, "stats": run_stats, "pack": run_pack}[args.command](args)
    except (RecordError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
