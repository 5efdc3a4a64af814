"""The ``leaderboard`` subcommand of ``python -m nemo_neko.eval``.

Flags left out take the run's ``leaderboard:`` settings (its ``config.yaml``; what the launcher's
``leaderboard`` stage runs), then :class:`~nemo_neko.config.LeaderboardConfig`'s defaults.
Backend options are ``KEY=VALUE`` with JSON values (``--nbest-option beam_size=8``, strings may
stay unquoted: ``--first-pass-option model=nvidia/canary-1b-flash``).
"""

from __future__ import annotations

import argparse
import json


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "leaderboard",
        help="first pass, N-best, NeKo correction and leaderboard scoring, in one command",
        description="Over prepared Open ASR Leaderboard test sets (lhotse cut manifests): the "
        "first pass (a backend, or existing result manifests), N-best lists, NeKo correction with "
        "the run's latest checkpoint, leaderboard result manifests of both systems, and a side-by-"
        "side score (table, JSON, markdown, PNG). Every stage resumes where it stopped.",
    )
    parser.add_argument("--run-dir", required=True, help="the trained run's directory")
    parser.add_argument(
        "--sets",
        nargs="+",
        metavar="NAME=CUTS|DIR",
        help="test sets: <dataset>_<split>=cuts.jsonl.gz, or folders of recipe manifests "
        "(<corpus>_cuts_<part>.jsonl.gz); default: the run's leaderboard.sets",
    )
    parser.add_argument(
        "--first-pass",
        metavar="BACKEND|PATH",
        help="canary (the leaderboard's setting), pocketsphinx, or a folder/file of result "
        "manifests MODEL_<model>_DATASET_..._<set>.jsonl (default: canary)",
    )
    parser.add_argument(
        "--first-pass-option", type=_option, action="append", default=None, metavar="KEY=VALUE"
    )
    parser.add_argument("--first-pass-model", help="the first pass's model label in manifests")
    parser.add_argument("--nbest-backend", metavar="BACKEND", help="default: canary (beam n)")
    parser.add_argument(
        "--nbest-option", type=_option, action="append", default=None, metavar="KEY=VALUE"
    )
    parser.add_argument("--n", type=int, help="hypotheses per record (default 5)")
    parser.add_argument("--batch-size", type=int, help="utterances per recognition batch")
    parser.add_argument("--protocol", help="esb2024 or oal2026 (default)")
    parser.add_argument("--out", metavar="DIR", help="default: <run-dir>/leaderboard")
    parser.set_defaults(run=run)


def job_from_args(args):
    """The :class:`LeaderboardJob` of the flags over the run's ``leaderboard:`` settings."""
    from dataclasses import asdict

    from nemo_neko.config import load_run_config
    from nemo_neko.eval.leaderboard.pipeline import LeaderboardJob
    from nemo_neko.paths import RunPaths

    settings = asdict(load_run_config(RunPaths(args.run_dir).config).leaderboard)
    flags = {
        "sets": args.sets,
        "first_pass": args.first_pass,
        "first_pass_model": args.first_pass_model,
        "nbest_backend": args.nbest_backend,
        "n": args.n,
        "batch_size": args.batch_size,
        "protocol": args.protocol,
        "out": args.out,
    }
    settings.update({k: v for k, v in flags.items() if v is not None})
    for name in ("first_pass_option", "nbest_option"):
        given = getattr(args, name)
        if given:
            key = name.replace("_option", "_options")
            settings[key] = {**settings[key], **dict(given)}
    if not settings["sets"]:
        raise ValueError(
            f"{args.run_dir}: no test sets: give --sets or set leaderboard.sets in the run config"
        )
    return LeaderboardJob(run_dir=args.run_dir, **settings)


def run(args) -> None:
    from nemo_neko.eval.leaderboard.compare import comparison_text
    from nemo_neko.eval.leaderboard.pipeline import run_leaderboard
    from nemo_neko.utils.logs import quiet_libraries

    quiet_libraries()
    job = job_from_args(args)
    comparison = run_leaderboard(job)
    print(comparison_text(comparison))
    print(f"leaderboard: {job.out_dir}/leaderboard.json, .md, .png; manifests in {job.out_dir}")
