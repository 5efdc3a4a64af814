"""The local launcher stopped by signals, on real processes: SIGTERM mid-training saves at the
step it stopped, exits 75 with one line and leaves no process behind; SIGKILL of the launcher
still stops (and saves) the training through the parent-death signals; rerunning the same
command finishes with the losses of an uninterrupted run, each step once in ``metrics.jsonl``;
Ctrl-C twice aborts; a run directory in use is refused before anything is written."""

import signal
import subprocess
import sys
import time

import pytest

from nemo_neko.testing.runs import MICRO_OVERRIDES, write_micro_data, write_micro_run
from nemo_neko.train.stop import STOPPED_STATUS
from tests.train.stopping import (
    ROOT,
    STOP_OVERRIDES,
    Family,
    hold_lock,
    last_step,
    latest,
    losses_once,
    start,
    stop_record,
    tail,
    trainer,
    wait_until,
)

OVERRIDES = [*STOP_OVERRIDES, "train.epochs=4"]
"""95 steps: room for a SIGTERM, then a SIGKILL, each well before the end."""


def _launcher(run_dir, data_root) -> list[str]:
    data = write_micro_data(data_root)
    return [
        sys.executable,
        "launch/run.py",
        f"run_dir={run_dir}",
        *MICRO_OVERRIDES,
        *data,
        "stages=[train]",
        *OVERRIDES,
    ]


def _watch(proc, family: Family, log, condition, what: str) -> None:
    def seen_and(condition=condition):
        family.look()
        return condition()

    wait_until(seen_and, proc, log, what)


@pytest.mark.slow
def test_sigterm_to_the_launcher_saves_and_the_same_command_resumes_to_identical_losses(tmp_path):
    data_root = tmp_path / "data"
    straight = tmp_path / "straight"
    config = write_micro_run(straight, OVERRIDES, data_root=data_root)
    reference = trainer(config, tmp_path / "straight.log")
    assert reference.wait(timeout=600) == 0, tail(tmp_path / "straight.log")
    expected = losses_once(straight)
    total = len(expected)
    assert total > 90

    run_dir = tmp_path / "run"
    command = _launcher(run_dir, data_root)
    log = tmp_path / "launch1.log"
    launcher = start(command, log)
    family = Family(launcher.pid)
    _watch(launcher, family, log, lambda: last_step(run_dir) >= 4, "step 4")
    launcher.send_signal(signal.SIGTERM)
    while launcher.poll() is None:
        family.look()
        time.sleep(0.05)
    assert launcher.returncode == STOPPED_STATUS, tail(log)
    assert family.alive() == [], "the launcher left processes behind"
    assert any("-m nemo_neko.train" in c for c in family.commands.values()), family.commands
    step = last_step(run_dir)
    assert 4 <= step < total and latest(run_dir) == f"step_{step:08d}"
    text = log.read_text()
    assert "Traceback" not in text and "FAILED" not in text, text[-4000:]
    assert text.splitlines()[-1] == (
        f"[train] stopped at step {step} of {total} on SIGTERM, checkpoint "
        f"{run_dir}/checkpoints/step_{step:08d}: rerun the same command to resume"
    )

    # SIGKILL of the launcher: torchrun gets SIGTERM (parent-death signal), passes it on; the
    # rank saves after its step and nothing is left
    log = tmp_path / "launch2.log"
    launcher = start(command, log)
    family = Family(launcher.pid)
    _watch(launcher, family, log, lambda: last_step(run_dir) >= step + 3, f"step {step + 3}")
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 120
    while family.alive():
        assert time.monotonic() < deadline, f"left behind: {family.alive()}\n{tail(log)}"
        time.sleep(0.2)
    killed_at = stop_record(run_dir)["step"]
    assert killed_at >= step + 3 and latest(run_dir) == f"step_{killed_at:08d}", tail(log)

    log = tmp_path / "launch3.log"
    launcher = start(command, log)
    assert launcher.wait(timeout=600) == 0, tail(log)
    assert f"resumed from {run_dir}/checkpoints/step_{killed_at:08d}" in log.read_text()
    resumed = losses_once(run_dir)  # each step exactly once, though three runs logged
    assert sorted(resumed) == sorted(expected)
    for s, want in expected.items():
        assert resumed[s] == pytest.approx(want, abs=1e-5), f"step {s}"
    assert stop_record(run_dir) is None, "a finished training leaves no stop record"


def test_a_launcher_on_a_run_directory_in_use_is_refused_before_writing_anything(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir / "train.lock")
    try:
        done = subprocess.run(
            _launcher(run_dir, tmp_path / "data"),
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        f"error: run directory {run_dir} is in use by another trainer: pid {holder.pid} host "
    ), line
    assert f"(stop it with kill -TERM {holder.pid} on its host)" in line
    assert sorted(p.name for p in run_dir.iterdir()) == ["train.lock"], "nothing written"


@pytest.mark.slow
def test_a_second_ctrl_c_to_the_launcher_aborts_training_without_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    log = tmp_path / "launch.log"
    launcher = start(_launcher(run_dir, tmp_path / "data"), log)
    family = Family(launcher.pid)
    _watch(launcher, family, log, lambda: last_step(run_dir) >= 2, "step 2")
    launcher.send_signal(signal.SIGINT)
    time.sleep(0.05)  # both arrive before the launcher forwards either
    launcher.send_signal(signal.SIGINT)
    while launcher.poll() is None:
        family.look()
        time.sleep(0.05)
    assert launcher.returncode == 1, tail(log)
    assert (
        log.read_text()
        .splitlines()[-1]
        .startswith("error: stage 'train' failed with exit code 1 after SIGINT, SIGINT: ")
    ), tail(log)
    assert family.alive() == [] and latest(run_dir) is None and stop_record(run_dir) is None
