"""``cluster=slurm``: the run as one sbatch job, rendered from the config and submitted.

    python launch/run.py cluster=slurm model=8x22b cluster.account=<account> cluster.partition=<p>
    python launch/run.py cluster=slurm model=8x22b dry_run=true        # print the script only

:func:`render` turns the run config into ``<run_dir>/slurm/run.sbatch``: ``#SBATCH`` options
(nodes, tasks and GPUs per node, partition, account, time, exclusive, requeue, log
``<run_dir>/slurm/<job id>.out`` appended to across requeues), the environment (rendezvous at the
first node of the job, ``cluster.env``) and one ``srun`` per stage, each in the container when
``cluster.container_image`` is set (Pyxis ``--container-image``/``--container-mounts``):

* ``train`` on every rank, either one task per rank (``cluster.launcher=srun``: ``RANK``,
  ``LOCAL_RANK``, ``WORLD_SIZE`` from ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NTASKS``) or
  one torchrun per node (``cluster.launcher=torchrun``);
* ``correct`` and ``report`` as one task on the first node.

The script holds no logic beyond that: every setting comes from ``<run_dir>/config.yaml``, which
every step reads. A requeued job (node failure, ``scontrol requeue``) or a resubmitted script
runs the same stages again: training resumes from the run's latest checkpoint, correction skips
the records already corrected.

Stopping before the time limit: ``#SBATCH --signal=B:USR1@<cluster.stop_signal_lead>`` has Slurm
send SIGUSR1 to the batch shell (only) that many seconds before the limit; the shell's trap
forwards it to the running job step (``kill`` of the ``srun``, which passes it to every task):
training stops on every rank after the same step, saves a checkpoint and writes
``<run_dir>/train.stopped``; another stage gets SIGTERM. No later stage starts; with
``cluster.requeue`` the job then requeues itself (``scontrol requeue $SLURM_JOB_ID``) and
resumes where it stopped, otherwise it exits with status 75 and says how to resubmit. The
same by hand: ``scancel --batch --signal=USR1 <job>``. Each step runs in the background
(``srun ... &``) so that the shell can take the signal while waiting for it (``wait_step``).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from nemo_neko.launch.local import correct_torchrun, stage_commands
from nemo_neko.paths import RunPaths
from nemo_neko.train.stop import STOPPED_STATUS

SCRIPT_NAME = "run.sbatch"


class SlurmError(RuntimeError):
    """sbatch is missing, or it rejected the job."""


def slurm_dir(run_dir: Path) -> Path:
    """Where the job script and the job logs of a run go: ``<run_dir>/slurm``."""
    return Path(run_dir).resolve() / "slurm"


def python_of(cluster) -> str:
    """The interpreter of the job steps: ``cluster.python``, else ``python`` in a container,
    else this interpreter (the cluster shares the file system it lives on)."""
    return cluster.python or ("python" if cluster.container_image else sys.executable)


def container_args(cluster, workdir: Path, run_dir: Path) -> list[str]:
    """Pyxis options for ``srun``: the image, the mounts (the launch directory and the run
    directory at their own paths, then ``cluster.container_mounts``) and the working directory;
    none without an image."""
    if not cluster.container_image:
        return []
    mounts = [f"{workdir}:{workdir}"]
    if not run_dir.is_relative_to(workdir):
        mounts.append(f"{run_dir}:{run_dir}")
    mounts += list(cluster.container_mounts)
    return [
        f"--container-image={cluster.container_image}",
        f"--container-mounts={','.join(mounts)}",
        f"--container-workdir={workdir}",
    ]


def _sbatch_options(run, logs: Path, workdir: Path) -> list[str]:
    cluster = run.cluster
    tasks = cluster.nproc_per_node if cluster.launcher == "srun" else 1
    options = [
        f"--job-name={cluster.job_name or run.name}",
        f"--nodes={cluster.nnodes}",
        f"--ntasks-per-node={tasks}",
    ]
    optional = {
        "gpus-per-node": cluster.gpus_per_node or None,
        "cpus-per-task": cluster.cpus_per_task,
        "mem": cluster.mem,
        "time": cluster.time,
        "partition": cluster.partition,
        "account": cluster.account,
    }
    options += [f"--{key}={value}" for key, value in optional.items() if value is not None]
    if cluster.exclusive:
        options.append("--exclusive")
    options.append("--requeue" if cluster.requeue else "--no-requeue")
    if cluster.stop_signal_lead:
        options.append(f"--signal=B:USR1@{cluster.stop_signal_lead}")
    options += [
        "--open-mode=append",
        f"--chdir={workdir}",
        f"--output={logs / '%j.out'}",
        *cluster.sbatch_args,
    ]
    return options


def _srun(cluster, container: list[str], stage_args: list[str], command: str) -> str:
    """One ``srun`` line, continued over lines for reading, started in the background (``&``:
    :func:`_stop_functions`' ``wait_step`` waits for it)."""
    parts = ["srun", "--kill-on-bad-exit=1", *stage_args, *container, *cluster.srun_args]
    lines = [" ".join(shlex.quote(p) for p in parts), command + " &"]
    return " \\\n    ".join(lines)


def _stop_functions(cluster, run_dir: Path, script: Path) -> list[str]:
    """The trap forwarding SIGUSR1 to the running step, ``wait_step`` and ``stopped``."""
    if cluster.requeue:
        then = [
            '    echo "nemo-neko: job $SLURM_JOB_ID stopped ($1); requeueing it to resume"',
            '    scontrol requeue "$SLURM_JOB_ID"',
        ]
    else:
        then = [
            '    echo "nemo-neko: job $SLURM_JOB_ID stopped ($1); resume with: sbatch '
            + shlex.quote(str(script))
            + '"'
        ]
    return [
        "",
        "# SIGUSR1 (Slurm's warning before the time limit, or scancel --batch --signal=USR1) goes",
        "# to the running step: training stops after its current step with a checkpoint, another",
        "# stage stops; no later stage starts and the job requeues itself (cluster.requeue).",
        f"STOPPED_FILE={shlex.quote(str(RunPaths(run_dir).stopped))}",
        'warned="" step="" forward_as=USR1',
        "forward() {  # the warning to the running step, if any, as $forward_as",
        '    if [ -n "$step" ]; then kill -s "$forward_as" "$step" 2>/dev/null || true; fi',
        "}",
        "trap 'warned=1; forward' USR1",
        "wait_step() {  # wait_step SIGNAL: wait for the step just started (&), forwarding as SIGNAL",
        "    step=$! forward_as=$1",
        '    if [ -n "$warned" ]; then forward; fi',
        "    local status=0",
        "    while :; do  # a trapped signal interrupts wait: wait again until the step is gone",
        '        wait "$step" && status=0 || status=$?',
        '        kill -0 "$step" 2>/dev/null || break',
        "    done",
        '    step=""',
        '    return "$status"',
        "}",
        f"stopped() {{  # stopped WHAT: end the job before its last stage (status {STOPPED_STATUS})",
        *then,
        f"    exit {STOPPED_STATUS}",
        "}",
    ]


def _after_step(stage: str) -> list[str]:
    """What the script does when a stage's step has ended (``status``: its exit status)."""
    if stage == "train":
        return [
            f'if [ -e "$STOPPED_FILE" ] && [[ "$status" =~ ^(0|{STOPPED_STATUS})$ ]]; then',
            '    stopped "training: $(cat "$STOPPED_FILE")"',
            "fi",
            'if [ "$status" -ne 0 ]; then exit "$status"; fi',
            'if [ -n "$warned" ]; then stopped "warned after training had finished"; fi',
        ]
    return [
        f'if [ -n "$warned" ]; then stopped "warned during {stage}"; fi',
        'if [ "$status" -ne 0 ]; then exit "$status"; fi',
    ]


def _train_step(run, python: str, config: Path, container: list[str]) -> str:
    cluster = run.cluster
    module = f"-m nemo_neko.train {shlex.quote(str(config))}"
    if cluster.launcher == "srun":
        ranks = "export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS"
        inner = f"{ranks}; exec {shlex.quote(python)} {module}"
        stage_args = [f"--nodes={cluster.nnodes}", f"--ntasks-per-node={cluster.nproc_per_node}"]
    else:
        # srun passes a signal to every process of the step, the ranks too: torchrun ignores
        # SIGUSR1 (it would die of it, or answer with a traceback), the ranks handle it
        inner = (
            f'trap "" USR1; exec {shlex.quote(python)} -m torch.distributed.run '
            f"--nnodes=$SLURM_JOB_NUM_NODES "
            f"--node_rank=$SLURM_NODEID --nproc_per_node={cluster.nproc_per_node} "
            f"--master_addr=$MASTER_ADDR --master_port=$MASTER_PORT {module}"
        )
        stage_args = [f"--nodes={cluster.nnodes}", "--ntasks-per-node=1"]
    return _srun(cluster, container, stage_args, f"bash -c {shlex.quote(inner)}")


def render(run, run_dir: Path, workdir: Path | None = None) -> str:
    """The sbatch script of ``run`` (nothing is written).

    Args:
        run: the run config (:class:`~nemo_neko.config.RunConfig`, cluster kind ``slurm``).
        run_dir: the run directory; made absolute against ``workdir``.
        workdir: the job's working directory (default: the current directory).
    """
    cluster = run.cluster
    workdir = Path(workdir or Path.cwd()).resolve()
    run_dir = (workdir / run_dir).resolve()
    logs = slurm_dir(run_dir)
    python = python_of(cluster)
    container = container_args(cluster, workdir, run_dir)
    config = run_dir / "config.yaml"
    world = f"{cluster.nnodes} node(s) x {cluster.nproc_per_node} ranks"
    lines = [
        "#!/bin/bash",
        f"# nemo-neko run {run.name}: model {run.model.name} on cluster {cluster.name}, {world}.",
        "# Written by `python launch/run.py`; every setting is in the run's config.yaml. Resubmit",
        f"# (resuming from the latest checkpoint) with: sbatch {shlex.quote(str(logs / SCRIPT_NAME))}",
    ]
    lines += [f"#SBATCH {option}" for option in _sbatch_options(run, logs, workdir)]
    lines += [
        "set -euo pipefail",
        "",
        'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f"export MASTER_ADDR MASTER_PORT={cluster.master_port} PYTHONUNBUFFERED=1",
    ]
    for key, value in cluster.env.items():
        if not key.isidentifier():
            raise ValueError(f"cluster.env: {key!r} is not a valid environment variable name")
        lines.append(f"export {key}={shlex.quote(str(value))}")
    lines.append(
        'echo "nemo-neko: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on '
        '$SLURM_JOB_NODELIST, rendezvous $MASTER_ADDR:$MASTER_PORT"'
    )
    lines += _stop_functions(cluster, run_dir, logs / SCRIPT_NAME)
    commands = stage_commands(run, run_dir, python)
    single = ["--nodes=1", "--ntasks=1"]
    for stage in run.active_stages():
        lines.append("")
        if stage == "train":
            lines.append(f"# train: {world}; resumes from {run_dir / 'checkpoints'}/latest")
            lines.append(_train_step(run, python, config, container))
            lines.append("status=0; wait_step USR1 || status=$?")
        elif stage == "correct" and run.generate.nproc > 1:
            ranks = correct_torchrun(run.generate.nproc, python)
            lines.append(f"# correct: one task on the first node, {run.generate.nproc} ranks in it")
            lines.append(_srun(cluster, container, single, shlex.join(ranks + commands[stage][1:])))
            lines.append("status=0; wait_step TERM || status=$?")
        else:
            lines.append(f"# {stage}: one task on the first node")
            lines.append(_srun(cluster, container, single, shlex.join(commands[stage])))
            lines.append("status=0; wait_step TERM || status=$?")
        lines += _after_step(stage)
    return "\n".join(lines) + "\n"


def plan(run, run_dir: Path) -> str:
    """The dry-run text: where the script would go, and the script."""
    script = slurm_dir(run_dir) / SCRIPT_NAME
    return f"sbatch script (not submitted; would be written to {script}):\n\n" + render(
        run, run_dir
    )


def sbatch_path() -> str:
    """The ``sbatch`` executable; :class:`SlurmError` when it is not on ``PATH``."""
    found = shutil.which("sbatch")
    if found is None:
        raise SlurmError(
            "cluster.kind=slurm submits with sbatch, which is not on PATH: run on a Slurm login "
            "node (or load its module), use cluster=local, or add dry_run=true to print the script"
        )
    return found


def submit(script: Path) -> str:
    """``sbatch --parsable script``; returns the job id, :class:`SlurmError` when rejected."""
    try:
        done = subprocess.run(
            [sbatch_path(), "--parsable", str(script)], capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired as error:
        raise SlurmError(f"sbatch {script}: no answer from Slurm after {error.timeout}s") from error
    message = (done.stderr.strip() or done.stdout.strip()).replace("\n", "; ")
    if done.returncode != 0:
        raise SlurmError(f"sbatch rejected {script} (exit {done.returncode}): {message}")
    job = done.stdout.strip().split(";")[0]
    if not job.isdigit():
        raise SlurmError(f"sbatch {script}: no job id in its answer: {message!r}")
    return job


def check(run) -> None:
    """Before anything is written: sbatch must be there."""
    sbatch_path()


def start(run, run_dir: Path) -> int:
    """Write the script, submit it, print the job id, the script and the log."""
    logs = slurm_dir(run_dir)
    logs.mkdir(parents=True, exist_ok=True)
    script = logs / SCRIPT_NAME
    script.write_text(render(run, run_dir))
    job = submit(script)
    cluster = run.cluster
    where = f" on partition {cluster.partition}" if cluster.partition else ""
    print(
        f"submitted job {job}: run {run.name}, {cluster.nnodes} node(s) x "
        f"{cluster.nproc_per_node} ranks{where}\n"
        f"  script: {script}\n"
        f"  log:    {logs / f'{job}.out'}\n"
        f"  follow: tail -f {logs / f'{job}.out'}   cancel: scancel {job}",
        flush=True,
    )
    return 0
