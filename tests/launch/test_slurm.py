"""cluster=slurm without a Slurm: the rendered sbatch script (options, rendezvous, container flags
present or absent, srun or torchrun), submission through a stand-in sbatch (job id, script and
log printed), a missing or rejecting sbatch as clear errors, the Dockerfile, and the script's
stop path under bash with stand-in srun/scontrol (the warning signal forwarded to the running
step, no later stage, the job requeued, a failure not)."""

import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_neko.config import CONF_DIR, to_run_config
from nemo_neko.launch import launch
from nemo_neko.launch.slurm import SlurmError, render
from nemo_neko.train.stop import STOPPED_STATUS
from tests.launch.test_config import ROOT, compose_config


def script_of(tmp_path, *overrides, workdir=None):
    run = to_run_config(compose_config([f"run_dir={tmp_path / 'run'}", *overrides]))
    text = render(run, Path(run.run_dir), workdir=workdir or tmp_path)
    syntax = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert syntax.returncode == 0, f"not valid bash: {syntax.stderr}\n{text}"
    return text


def sbatch_options(text: str) -> list[str]:
    return re.findall(r"^#SBATCH (\S+)$", text, flags=re.M)


def srun_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("srun ")]


def test_8x22b_script_requests_its_nodes_and_runs_every_stage_in_the_nemo_container(tmp_path):
    text = script_of(
        tmp_path,
        "model=8x22b",
        "cluster=slurm",
        "cluster.account=asr",
        "cluster.partition=batch",
        "cluster.container_mounts=['/lustre/data:/data']",
        "cluster.sbatch_args=['--qos=high']",
        "cluster.srun_args=['--mpi=pmix']",
        "cluster.master_port=31234",
    )
    run_dir = tmp_path / "run"
    options = sbatch_options(text)
    for option in [
        "--job-name=neko-8x22b", "--nodes=16", "--ntasks-per-node=8", "--gpus-per-node=8",
        "--account=asr", "--partition=batch", "--time=04:00:00", "--mem=0", "--exclusive",
        "--requeue", "--open-mode=append", f"--chdir={tmp_path}",
        f"--output={run_dir}/slurm/%j.out", "--qos=high",
    ]:  # fmt: skip
        assert option in options, (option, options)
    assert 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in text
    assert "MASTER_PORT=31234" in text and "export OMP_NUM_THREADS=1" in text
    steps = srun_lines(text)
    assert len(steps) == 3  # train, correct, report
    image = "'--container-image=nvcr.io#nvidia/nemo:25.11'"
    mounts = f"--container-mounts={tmp_path}:{tmp_path},/lustre/data:/data"
    for step in steps:
        assert image in step and mounts in step and f"--container-workdir={tmp_path}" in step
        assert "--mpi=pmix" in step and "--kill-on-bad-exit=1" in step
    assert "--nodes=16 --ntasks-per-node=8" in steps[0]
    assert "--nodes=1 --ntasks=1" in steps[1] and "--nodes=1 --ntasks=1" in steps[2]
    body = text.split("\n")
    train = body[body.index(steps[0]) + 1]
    assert "RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS" in train
    assert f"exec python -m nemo_neko.train {run_dir}/config.yaml" in train  # the image's python
    assert f"python -m nemo_neko.eval correct --run-dir {run_dir}" in text


def test_without_an_image_steps_run_on_the_host_with_this_interpreter(tmp_path):
    text = script_of(tmp_path, "cluster=slurm_local", "stages=[train]")
    assert "--container" not in text
    options = sbatch_options(text)
    assert "--partition=local" in options and "--ntasks-per-node=2" in options
    assert not any(o.startswith(("--gpus", "--exclusive", "--account", "--time")) for o in options)
    assert f"exec {sys.executable} -m nemo_neko.train" in text
    assert len(srun_lines(text)) == 1


def test_torchrun_per_node_and_a_run_dir_outside_the_launch_directory(tmp_path):
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    text = script_of(
        tmp_path,
        "model=8x7b",
        "cluster=slurm",
        "cluster.launcher=torchrun",
        "cluster.container_image=/images/nemo-neko.sqsh",
        "cluster.job_name=mixtral",
        "stages=[train]",
        workdir=workdir,
    )
    options = sbatch_options(text)
    assert "--job-name=mixtral" in options and "--ntasks-per-node=1" in options
    assert "--gpus-per-node=8" in options and "--nodes=8" in options
    (step,) = srun_lines(text)
    assert "--nodes=8 --ntasks-per-node=1" in step
    assert f"--container-mounts={workdir}:{workdir},{tmp_path / 'run'}:{tmp_path / 'run'}" in step
    assert (
        "-m torch.distributed.run --nnodes=$SLURM_JOB_NUM_NODES --node_rank=$SLURM_NODEID "
        "--nproc_per_node=8 --master_addr=$MASTER_ADDR --master_port=$MASTER_PORT" in text
    )


def _fake_sbatch(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / "sbatch"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_missing_sbatch_is_a_clear_error_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    cfg = compose_config(["cluster=slurm_local", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(SlurmError, match="sbatch, which is not on PATH.*dry_run=true"):
        launch(cfg)
    assert not (tmp_path / "run").exists()


def test_rejected_submission_is_a_clear_error(tmp_path, monkeypatch):
    _fake_sbatch(
        tmp_path / "bin",
        'echo "sbatch: error: Batch job submission failed: Invalid account or account/partition '
        'combination specified" >&2\nexit 1\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    cfg = compose_config(["cluster=slurm_local", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(
        SlurmError, match=r"sbatch rejected .*run\.sbatch \(exit 1\): .*Invalid account"
    ):
        launch(cfg)


def test_submission_prints_job_id_script_and_log(tmp_path, monkeypatch, capsys):
    _fake_sbatch(tmp_path / "bin", f'echo "$@" > {tmp_path}/args\necho "4242;cluster"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    run_dir = tmp_path / "run"
    assert launch(compose_config(["cluster=slurm_local", f"run_dir={run_dir}"])) == 0
    out = capsys.readouterr().out
    script = run_dir / "slurm" / "run.sbatch"
    assert "submitted job 4242" in out
    assert f"script: {script}" in out and f"log:    {run_dir}/slurm/4242.out" in out
    assert (tmp_path / "args").read_text().split() == ["--parsable", str(script)]
    assert (run_dir / "config.yaml").exists() and script.read_text().startswith("#!/bin/bash")


def test_dockerfile_builds_on_a_pinned_nemo_release_without_reinstalling_torch():
    text = (ROOT / "Dockerfile").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    (base,) = re.findall(r"^FROM (\S+)", code, flags=re.M)
    assert re.fullmatch(r"nvcr\.io/nvidia/nemo:\d\d\.\d\d(\.\d+)?", base), base
    installs = re.findall(r"pip install[^\n]*", code)
    assert installs and all("-c /opt/container-pins.txt" in line for line in installs)
    assert "grep -iE '^(torch|" in code, "the container's torch must be pinned"
    assert not re.search(r"pip install[^\n]*\btorch\b|constraints/cpu\.txt|--force-reinstall", code)
    assert re.search(r'^CMD \["python", "-m", "nemo_neko.launch"\]$', code, flags=re.M)
    assert not re.search(r"pip install[^\n]*\s-e\s", code), "installed non-editable, as a wheel"
    slurm = (CONF_DIR / "cluster" / "slurm.yaml").read_text()
    tag = base.split(":")[1]
    assert f"container_image: nvcr.io#nvidia/nemo:{tag}" in slurm, "the same NeMo release"


def test_the_job_asks_for_a_warning_before_its_time_limit(tmp_path):
    options = sbatch_options(script_of(tmp_path, "cluster=slurm", "cluster.time=01:00:00"))
    assert "--signal=B:USR1@300" in options and "--requeue" in options
    options = sbatch_options(
        script_of(
            tmp_path, "cluster=slurm", "cluster.stop_signal_lead=900", "cluster.requeue=false"
        )
    )
    assert "--signal=B:USR1@900" in options and "--no-requeue" in options
    options = sbatch_options(script_of(tmp_path, "cluster=slurm", "cluster.stop_signal_lead=0"))
    assert not any(o.startswith("--signal") for o in options)
    with pytest.raises(ValueError, match=r"stop_signal_lead=70000 must be in \[0, 65535\]"):
        launch(compose_config(["cluster=slurm_local", "cluster.stop_signal_lead=70000"]))


# Stand-ins for srun and scontrol around the real script under bash: each "job step" records its
# arguments and, by the mode the test gives it, ends at once (ok, fail) or waits for a signal:
# USR1 plays the trainer (writes the stop record, exits 0), TERM another stage (exits 143).
_SRUN = """#!/bin/bash
echo "$*" >> "$FAKE/steps"
n=$(wc -l < "$FAKE/steps")
mode=$(sed -n "${n}p" "$FAKE/modes")
case "$mode" in ok) exit 0;; fail) exit 1;; esac
trap 'echo "$n USR1" >> "$FAKE/signals"; echo "{\\"step\\": 7}" > "$FAKE_STOPPED"; exit 0' USR1
trap 'echo "$n TERM" >> "$FAKE/signals"; exit 143' TERM
touch "$FAKE/running.$n"
while :; do sleep 0.05; done
"""
_SCONTROL = """#!/bin/bash
case "$1" in show) echo localhost;; *) echo "$*" >> "$FAKE/scontrol.log";; esac
"""


def _job(tmp_path, modes: list[str], *overrides, warn_step: int | None = None):
    """Run the script of a train + correct job under bash with the stand-ins; ``warn_step``:
    send the batch shell SIGUSR1 (as ``--signal=B:USR1``) once that step runs."""
    fake = tmp_path / "fake"
    fake.mkdir(parents=True)
    for name, body in (("srun", _SRUN), ("scontrol", _SCONTROL)):
        (fake / name).write_text(body)
        (fake / name).chmod(0o755)
    (fake / "modes").write_text("\n".join(modes) + "\n")
    run_dir = tmp_path / "run"
    script = tmp_path / "run.sbatch"
    script.write_text(
        script_of(tmp_path, "cluster=slurm_local", "stages=[train,correct]", *overrides)
    )
    env = {
        "PATH": f"{fake}:/usr/bin:/bin", "FAKE": str(fake), "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "localhost", "FAKE_STOPPED": str(run_dir / "train.stopped"),
    }  # fmt: skip
    run_dir.mkdir(exist_ok=True)
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, text=True)
    if warn_step is not None:
        for _ in range(600):
            if (fake / f"running.{warn_step}").exists():
                break
            assert proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=60)

    def lines(name):
        return (fake / name).read_text().splitlines() if (fake / name).exists() else []

    return proc.returncode, out, lines("steps"), lines("signals"), lines("scontrol.log")


def test_the_warning_stops_training_and_the_job_requeues_itself(tmp_path):
    code, out, steps, signals, scontrol = _job(tmp_path, ["wait", "ok"], warn_step=1)
    assert code == STOPPED_STATUS == 75
    assert len(steps) == 1 and "nemo_neko.train" in steps[0], "correct must not start"
    assert signals == ["1 USR1"] and scontrol == ["requeue 4242"]
    assert 'nemo-neko: job 4242 stopped (training: {"step": 7}); requeueing it to resume' in out

    code, out, steps, signals, scontrol = _job(
        tmp_path / "no", ["wait"], "cluster.requeue=false", warn_step=1
    )
    assert code == 75 and scontrol == [] and signals == ["1 USR1"]
    assert f"resume with: sbatch {tmp_path / 'no' / 'run'}/slurm/run.sbatch" in out


def test_the_warning_during_correction_stops_it_and_requeues(tmp_path):
    code, out, steps, signals, scontrol = _job(tmp_path, ["ok", "wait"], warn_step=2)
    assert code == 75 and len(steps) == 2 and signals == ["2 TERM"]
    assert scontrol == ["requeue 4242"] and "stopped (warned during correct)" in out


def test_without_a_warning_the_stages_run_and_a_failure_is_not_requeued(tmp_path):
    code, out, steps, signals, scontrol = _job(tmp_path, ["ok", "ok"])
    assert code == 0 and len(steps) == 2 and signals == scontrol == []
    (tmp_path / "run" / "train.stopped").write_text("{}\n")  # left by an earlier stop
    code, out, steps, signals, scontrol = _job(tmp_path / "fail", ["fail", "ok"])
    assert code == 1 and len(steps) == 1 and scontrol == [], "a failed training is not requeued"
