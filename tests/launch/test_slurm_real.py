"""cluster=slurm against a real Slurm: a one-node cluster on this machine (scripts/slurm_local:
Debian's munged, slurmctld and slurmd started by hand), the tiny model trained by
``python launch/run.py cluster=slurm_local`` on 2 tasks (gloo, no container), resumed by a
second submission and again after ``scontrol requeue``; the warning signal before the time limit
(``scancel --batch --signal=USR1``, what ``--signal=B:USR1@<lead>`` sends): training stops with a
checkpoint, the job requeues itself and resumes to the uninterrupted losses; a rejected
submission; teardown always.

Skipped without the Slurm and munge binaries or without root, unless ``NEKO_REQUIRE_SLURM=1``
(CI), where that is a failure.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_neko.testing.runs import MICRO_OVERRIDES, write_micro_data

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "slurm_local"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel")
DONE, FAILED = {"COMPLETED"}, {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def _unavailable() -> str | None:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [tool for tool in TOOLS if shutil.which(tool, path=path) is None]
    if missing:
        return f"Slurm/munge binaries missing: {missing} (apt-get install slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "starting munged and slurmd needs root"
    return None


def _free_ports(count: int) -> int:
    """A port p with p .. p + count - 1 all free on the loopback interface."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The environment of a running one-node cluster (``SLURM_CONF`` set); torn down after."""
    reason = _unavailable()
    if reason:
        if os.environ.get("NEKO_REQUIRE_SLURM") == "1":
            pytest.fail(f"NEKO_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm") / "state"
    env = dict(os.environ, NEKO_SLURM_DIR=str(state), NEKO_SLURM_PORT=str(_free_ports(2)))
    try:
        up = subprocess.run(
            ["bash", str(SCRIPTS / "up.sh")], env=env, capture_output=True, text=True, timeout=180
        )
        assert up.returncode == 0, f"up.sh failed ({up.returncode}):\n{up.stderr}"
        (conf,) = re.findall(r"^export SLURM_CONF=(\S+)$", up.stdout, flags=re.M)
        yield dict(env, SLURM_CONF=conf)
    finally:
        down = subprocess.run(
            ["bash", str(SCRIPTS / "down.sh")], env=env, capture_output=True, text=True, timeout=180
        )
        assert down.returncode == 0, down.stderr
        assert not state.exists()


def submit(env, run_dir: Path, *overrides) -> str:
    """``python launch/run.py cluster=slurm_local model=tiny ...``; returns the job id."""
    done = subprocess.run(
        [
            sys.executable,
            "launch/run.py",
            "cluster=slurm_local",
            "model=tiny",
            f"run_dir={run_dir}",
            *overrides,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job = re.search(r"submitted job (\d+)", done.stdout).group(1)
    assert f"log:    {run_dir}/slurm/{job}.out" in done.stdout
    return job


def job_state(env, job: str) -> str:
    shown = subprocess.run(
        ["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True, timeout=60
    )
    found = re.search(r"JobState=(\S+)", shown.stdout)
    return found.group(1) if found else "UNKNOWN"


def wait(env, job: str, log: Path, timeout: float = 900) -> None:
    """Until the job has completed; its log in the failure message otherwise."""
    deadline = time.monotonic() + timeout
    state = "PENDING"
    while time.monotonic() < deadline:
        state = job_state(env, job)
        if state in DONE:
            return
        if state in FAILED:
            break
        time.sleep(2)
    tail = log.read_text()[-6000:] if log.exists() else "(no log)"
    ctld = Path(env["NEKO_SLURM_DIR"]) / "log" / "slurmctld.log"
    events = "\n".join(ctld.read_text().splitlines()[-30:]) if ctld.exists() else "(no log)"
    pytest.fail(f"job {job} ended {state}; log {log}:\n{tail}\nslurmctld.log:\n{events}")


def train_losses(run_dir: Path) -> dict[int, float]:
    """Per-step losses; fails when a step is logged twice (a resume drops the steps it redoes)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        item = json.loads(line)
        if item["kind"] == "train":
            assert item["step"] not in out, f"step {item['step']} logged twice"
            out[item["step"]] = item["loss"]
    return out


def release_requeued(env, job: str) -> None:
    """Once the requeued ``job`` is pending again, let it start now instead of after the delay
    Slurm puts on requeued jobs. Not within the same second as the requeue: slurmd revokes the
    old run's credential with a timestamp in seconds and refuses ("Job credential revoked",
    the job FAILED) a new one issued in that second, the race Slurm's own delay avoids."""
    for _ in range(60):
        if job_state(env, job) == "PENDING":
            time.sleep(2)
            subprocess.run(
                ["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, timeout=60
            )
            return
        time.sleep(1)
    pytest.fail(f"job {job} was not requeued: {job_state(env, job)}")


def latest(run_dir: Path) -> str:
    return (run_dir / "checkpoints" / "latest").read_text().strip()


@pytest.fixture(scope="module")
def trained(slurm, tmp_path_factory):
    """A job that trained the tiny model to step 20 uninterrupted: its run directory, the
    overrides it was submitted with and its losses (the reference of the stop test)."""
    root = tmp_path_factory.mktemp("trained")
    run_dir = root / "run"
    common = [
        *MICRO_OVERRIDES,
        *write_micro_data(root / "data"),
        "train.epochs=2",
        f"cluster.master_port={_free_ports(1)}",
        "generate.max_records_per_dataset=3",
    ]
    job = submit(slurm, run_dir, *common, "train.max_steps=20", "stages=[train]")
    log = run_dir / "slurm" / f"{job}.out"
    wait(slurm, job, log)
    text = log.read_text()
    assert f"nemo-neko: job {job} (restart 0)" in text and "step     20/20" in text
    losses = train_losses(run_dir)
    assert sorted(losses) == list(range(1, 21))
    assert losses[20] < 0.95 * losses[1], f"the loss must fall: {losses}"
    assert latest(run_dir) == "step_00000020"
    assert (run_dir / "checkpoints" / "step_00000020").is_dir()
    return run_dir, common, losses


def test_tiny_trains_on_slurm_then_resumes_after_resubmission_and_requeue(slurm, trained):
    run_dir, common, _ = trained

    # A second submission into the same run resumes at step 20 and runs every stage.
    job = submit(slurm, run_dir, *common, "train.max_steps=30")
    log = run_dir / "slurm" / f"{job}.out"
    deadline = time.monotonic() + 600
    while "resumed from" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and job_state(slurm, job) not in FAILED, log
        time.sleep(1)
    # ... and once more when Slurm requeues it (as after a node failure), without the delay
    subprocess.run(["scontrol", "requeue", job], env=slurm, check=True, timeout=60)
    release_requeued(slurm, job)
    wait(slurm, job, log)
    text = log.read_text()
    assert f"nemo-neko: job {job} (restart 0)" in text and f"job {job} (restart 1)" in text
    resumed = re.findall(r"resumed from \S+/(step_\d+) at step (\d+)", text)
    assert len(resumed) == 2 and resumed[0] == ("step_00000020", "20"), resumed
    losses = train_losses(run_dir)
    assert sorted(losses) == list(range(1, 31)), "steps continue where the checkpoint left off"
    assert latest(run_dir) == "step_00000030"
    assert (run_dir / "predictions.jsonl").exists() and (run_dir / "report.json").exists()


def test_the_warning_signal_stops_training_and_the_job_requeues_itself_to_the_end(
    slurm, trained, tmp_path
):
    _, common, expected = trained
    run_dir = tmp_path / "run"
    job = submit(slurm, run_dir, *common, "train.max_steps=20", "stages=[train]")
    log = run_dir / "slurm" / f"{job}.out"
    deadline = time.monotonic() + 600
    while not re.search(r"^step +4/20", log.read_text() if log.exists() else "", flags=re.M):
        assert time.monotonic() < deadline and job_state(slurm, job) not in FAILED | DONE, log
        time.sleep(0.5)
    # what --signal=B:USR1@<lead> sends before the time limit: SIGUSR1 to the batch shell only
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], env=slurm, check=True, timeout=60)
    release_requeued(slurm, job)
    wait(slurm, job, log)
    text = log.read_text()
    (stop,) = re.findall(r"^stopping at step (\d+) on SIGUSR1: checkpoint (\S+);", text, re.M)
    step = int(stop[0])
    assert 4 <= step < 20 and stop[1] == f"{run_dir}/checkpoints/step_{step:08d}", stop
    assert f'nemo-neko: job {job} stopped (training: {{"step": {step}, ' in text
    assert "requeueing it to resume" in text and f"job {job} (restart 1)" in text
    assert f"resumed from {run_dir}/checkpoints/step_{step:08d} at step {step}" in text
    assert "Traceback" not in text, text[-6000:]
    losses = train_losses(run_dir)  # each step once, though two runs logged
    assert sorted(losses) == list(range(1, 21))
    for s, want in expected.items():
        assert losses[s] == pytest.approx(want, abs=1e-5), f"step {s}"
    assert latest(run_dir) == "step_00000020" and not (run_dir / "train.stopped").exists()


def test_a_submission_slurm_rejects_is_a_clear_error(slurm, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "launch/run.py",
            "cluster=slurm_local",
            "cluster.partition=no_such_partition",
            f"run_dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        env=slurm,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert re.search(
        r"^error: sbatch rejected \S+run\.sbatch \(exit 1\): .*invalid partition",
        done.stderr,
        flags=re.I | re.M,
    ), done.stderr
