"""What a run will read, checked before anything starts (also for ``dry_run=true``).

:func:`check_inputs` looks at every path of the config the run's stages need, and at the run's
own files, so that a mistake is one line before torchrun starts or Slurm allocates anything:

* ``train`` with a ``base.source``: a registered name or an existing file/folder (``prepare``
  fetches and converts it), or, without ``prepare``, the run's ``base.json``;
* ``train``: each record file of ``data.train`` and ``data.test`` exists and its first record is
  valid (a dataset file that was never imported fails here); ``data.tokenizer.path`` is a
  Hugging Face tokenizer folder (unless the run already has its tokenizer); ``train.init_from``
  is a complete checkpoint (unless the run resumes from its own);
* ``train``/``correct``: the run's ``checkpoints/latest``, when there, names a complete
  checkpoint with every shard (:mod:`nemo_neko.model.checkpoint_files`);
* ``correct`` without ``train``: the held-out files, and a checkpoint and tokenizer to use;
* ``report`` without ``correct``: the predictions and the records beside them;
* ``leaderboard`` with ``leaderboard.sets``: every set's manifest (or folder of recipe
  manifests), the backends, the first-pass manifests when given, and a checkpoint to use.

On Slurm with a container, paths under a ``cluster.container_mounts`` destination are checked at
their source on this machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from nemo_neko.paths import RunPaths


def host_path(path: str | os.PathLike, cluster) -> Path:
    """Where ``path`` (as the job sees it) is on this machine: container mounts undone."""
    path = str(path)
    if cluster.kind == "slurm" and cluster.container_image:
        for mount in cluster.container_mounts:
            source, _, rest = mount.partition(":")
            target = rest.split(":")[0] or source
            if path == target or path.startswith(target.rstrip("/") + "/"):
                return Path(source + path[len(target) :])
    return Path(path)


def check_record_file(path: str, where: str, cluster, skip_invalid: bool) -> None:
    """``path`` exists and yields a first valid record; raises naming ``path`` and ``where``."""
    from nemo_neko.data.records import ReadReport, RecordError, iter_records

    local = host_path(path, cluster)
    if not local.exists():
        raise FileNotFoundError(f"{path}: no such record file ({where})")
    if not local.is_file():
        raise ValueError(f"{path}: not a record file but a folder ({where})")
    report = ReadReport()
    try:
        first = next(iter_records(local, skip_invalid=skip_invalid, report=report), None)
    except RecordError as error:
        hint = ""
        if "expected a JSON object" in error.message and not str(path).endswith((".jsonl", ".gz")):
            hint = "; a published dataset file? import it first: python -m nemo_neko.data import"
        message = f"{error.message} ({where}){hint}"
        raise RecordError(error.path, error.line, error.field, message) from None
    if first is None:
        rejected = f"; {report.num_rejected} lines rejected" if report.num_rejected else ""
        raise ValueError(f"{path}: no records ({where}{rejected})")


def check_tokenizer(path: str, cluster) -> None:
    local = host_path(path, cluster)
    if not local.is_dir():
        raise FileNotFoundError(f"{path}: no such tokenizer folder (data.tokenizer.path)")
    if not (local / "tokenizer.json").exists():
        raise FileNotFoundError(
            f"{path}: no tokenizer.json in this folder (data.tokenizer.path must be a Hugging "
            f"Face tokenizer folder)"
        )


def check_init_from(path: str, cluster) -> None:
    from nemo_neko.model.checkpoint_files import CheckpointError, check_checkpoint, read_latest

    local = host_path(path, cluster)
    if not local.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint folder (train.init_from)")
    if (local / "latest").exists():
        read_latest(local, shards=True)
    elif not (local / "metadata.json").exists():
        raise CheckpointError(
            f"{path}: not a distributed checkpoint nor a checkpoint folder with 'latest' "
            f"(train.init_from; `python -m nemo_neko.convert import` writes one)"
        )
    else:
        check_checkpoint(local, trainer_state=False, shards=True)


def check_inputs(run, run_dir: str | os.PathLike) -> None:
    """Raise (``FileNotFoundError``, ``ValueError``: one line each) on the first input of
    ``run`` its stages cannot read; see the module docstring for what is checked."""
    from nemo_neko.model.checkpoint_files import read_latest

    cluster, data, stages = run.cluster, run.data, set(run.stages)
    listed = ",".join(run.stages)
    paths = RunPaths(host_path(run_dir, cluster))
    groups = []
    if "train" in stages:
        groups.append(("data.train", data.train))
    if stages & {"train", "correct"}:
        groups.append(("data.test", data.test))
    for group, specs in groups:
        for spec in specs:
            for path in spec.paths:
                where = f"{group} dataset {spec.name!r}"
                check_record_file(path, where, cluster, data.skip_invalid)
    if run.base.source is not None and "train" in stages:
        from nemo_neko.convert.base_models import check_source

        if "prepare" in stages:
            check_source(run.base.source)  # registered or on disk; fetched by the stage itself
        elif paths.prepared_base() is None and not run.train.init_from:
            raise FileNotFoundError(
                f"{paths.base}: base.source={run.base.source} was never prepared (stages=[{listed}] "
                f"without prepare; add it: stages=[prepare,{listed}])"
            )
    has_tokenizer = (paths.tokenizer / "tokenizer.json").exists()
    if "train" in stages and data.tokenizer.path and not has_tokenizer:
        check_tokenizer(data.tokenizer.path, cluster)
    latest = read_latest(paths.checkpoints, shards=True) if stages & {"train", "correct"} else None
    if "train" in stages and latest is None and run.train.init_from:
        check_init_from(run.train.init_from, cluster)
    if "correct" in stages and "train" not in stages:
        if latest is None:
            raise FileNotFoundError(
                f"{paths.checkpoints}: no checkpoint to correct with (stages=[{listed}] "
                f"without train; train the run first)"
            )
        if not has_tokenizer:
            raise FileNotFoundError(f"{paths.tokenizer}: the run has no tokenizer (train it first)")
    if "leaderboard" in stages and run.leaderboard.sets:
        check_leaderboard(run, paths, stages, listed)
    if "report" in stages and "correct" not in stages:
        for needed in (paths.predictions, paths.corrected_records):
            if not needed.exists():
                raise FileNotFoundError(
                    f"{needed}: nothing to report (stages=[{listed}] without correct; run "
                    f"the correct stage first)"
                )


def check_leaderboard(run, paths: RunPaths, stages: set, listed: str) -> None:
    """The ``leaderboard`` stage's sets, backends and first-pass manifests exist (cut files are
    read by the stage itself, before its first recogniser loads), and a checkpoint will."""
    from nemo_neko.asr.backends import BACKENDS, check_options, known_backends
    from nemo_neko.eval.leaderboard.sets import find_sets
    from nemo_neko.eval.protocols import get_protocol

    board = run.leaderboard
    mapped = []
    for given in board.sets:
        name, sep, path = given.partition("=")
        mapped.append(
            f"{name}={host_path(path, run.cluster)}" if sep else str(host_path(given, run.cluster))
        )
    try:
        find_sets(mapped)
    except ValueError as err:
        raise ValueError(f"leaderboard.sets: {err}") from None
    if board.nbest_backend not in BACKENDS:
        raise ValueError(
            f"leaderboard.nbest_backend: unknown backend {board.nbest_backend!r} (known: "
            f"{', '.join(known_backends())})"
        )
    if board.n < 1 or board.batch_size < 1:
        raise ValueError(
            f"leaderboard.n ({board.n}) and leaderboard.batch_size ({board.batch_size}) must be >= 1"
        )
    try:
        get_protocol(board.protocol)
        check_options(board.nbest_backend, {"n": board.n, **board.nbest_options})
        if board.first_pass in BACKENDS:
            options = dict(board.first_pass_options)
            if board.first_pass == "canary":
                options.setdefault("method", "first_pass")
            check_options(board.first_pass, {"n": 1, **options})
    except (KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ValueError(f"leaderboard: {message}") from None
    if board.first_pass not in BACKENDS and not host_path(board.first_pass, run.cluster).exists():
        raise FileNotFoundError(
            f"leaderboard.first_pass: {board.first_pass!r} is neither a backend "
            f"({', '.join(known_backends())}) nor a folder or file of result manifests"
        )
    if "train" not in stages and read_latest_checkpoint(paths) is None:
        raise FileNotFoundError(
            f"{paths.checkpoints}: no checkpoint for the leaderboard stage (stages=[{listed}] "
            "without train; train the run first)"
        )


def read_latest_checkpoint(paths: RunPaths):
    from nemo_neko.model.checkpoint_files import read_latest

    return read_latest(paths.checkpoints, shards=True)
