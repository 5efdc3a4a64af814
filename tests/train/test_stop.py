"""Graceful stop of the trainer, on real processes and signals: SIGINT and SIGUSR1 after a step
(checkpoint at that step, status 75, one line), a signal during set-up (no checkpoint), a second
Ctrl-C (abort), two ranks with only one signalled (same step, complete checkpoint), the run
directory's lock (a second trainer refused in one line; a killed holder blocks nobody) and
``metrics.jsonl`` keeping each step once across a resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from nemo_neko.model.checkpoint_files import check_checkpoint
from nemo_neko.testing.runs import write_micro_run
from nemo_neko.train.logger import drop_steps_after
from nemo_neko.train.stop import STOPPED_STATUS
from nemo_neko.utils.lock import DirectoryLock, LockedError
from nemo_neko.utils.processes import catches
from tests.train.stopping import (
    ROOT,
    STOP_OVERRIDES,
    hold_lock,
    last_step,
    latest,
    ready_for,
    start,
    stop_record,
    tail,
    train_records,
    trainer,
    wait_until,
)


def test_a_resumed_run_drops_the_steps_it_redoes_from_metrics(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": s, "kind": "train", "loss": 1.0 / s} for s in range(1, 9)]
    records.insert(4, {"step": 4, "kind": "validation", "loss": 0.5})
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"step": 9, "kind": "tr'  # cut off
    path.write_text(text)
    assert drop_steps_after(path, 5) == 4  # steps 6, 7, 8 and the cut line
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r["kind"]) for r in kept] == [
        (1, "train"), (2, "train"), (3, "train"), (4, "train"), (4, "validation"), (5, "train"),
    ]  # fmt: skip
    assert kept == records[:6]
    assert drop_steps_after(path, 5) == 0 and drop_steps_after(tmp_path / "none.jsonl", 0) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temporary left
    assert drop_steps_after(path, 0) == 6 and path.read_text() == ""  # a fresh start


def test_the_lock_refuses_a_second_owner_and_a_killed_owner_blocks_nobody(tmp_path):
    path = tmp_path / "train.lock"
    holder = hold_lock(path)
    try:
        lock = DirectoryLock(path, what="run directory x")
        with pytest.raises(LockedError, match=rf"^run directory x is in use by another trainer: "
                           rf"pid {holder.pid} host \S+ since .*kill -TERM {holder.pid}"):  # fmt: skip
            lock.acquire()
        assert lock.holder().startswith(f"pid {holder.pid} host ")
    finally:
        holder.kill()
        holder.wait()
    assert f"pid {holder.pid}" in path.read_text()  # the file stays behind...
    assert lock.holder() is None  # ...and blocks nobody
    assert lock.acquire() and f"pid {os.getpid()} " in path.read_text()
    lock.release()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR1], ids=["SIGINT", "SIGUSR1"])
def test_a_signal_stops_the_trainer_after_its_step_with_a_checkpoint(tmp_path, sig):
    run_dir = tmp_path / "run"
    config = write_micro_run(run_dir, STOP_OVERRIDES, data_root=tmp_path / "data")
    log = tmp_path / "train.log"
    proc = trainer(config, log)
    wait_until(lambda: last_step(run_dir) >= 3, proc, log, "step 3")
    proc.send_signal(sig)
    assert proc.wait(timeout=300) == STOPPED_STATUS, tail(log)
    step = last_step(run_dir)
    name = signal.Signals(sig).name
    assert 3 <= step < 47, "stopped half-way"
    assert latest(run_dir) == f"step_{step:08d}"
    check_checkpoint(run_dir / "checkpoints" / latest(run_dir), trainer_state=True, shards=True)
    assert stop_record(run_dir) | {"pid": 0} == {
        "step": step, "total_steps": 47, "signal": name, "pid": 0,
        "checkpoint": str(run_dir / "checkpoints" / f"step_{step:08d}"),
    }  # fmt: skip
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    (line,) = [x for x in text.splitlines() if x.startswith("stopping")]
    assert line == (
        f"stopping at step {step} on {name}: checkpoint {run_dir}/checkpoints/step_{step:08d}; "
        f"rerun the same command to resume"
    )


@pytest.mark.slow
def test_a_second_trainer_is_refused_and_a_signal_during_set_up_stops_before_step_one(tmp_path):
    run_dir = tmp_path / "run"
    config = write_micro_run(run_dir, [*STOP_OVERRIDES, "train.epochs=8"], data_root=tmp_path)
    first = trainer(config, tmp_path / "first.log")
    try:
        wait_until(lambda: last_step(run_dir) >= 1, first, tmp_path / "first.log", "step 1")
        second = subprocess.run(
            [sys.executable, "-m", "nemo_neko.train", str(config)],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip
        assert second.returncode == 2, second.stdout + second.stderr
        (line,) = second.stderr.splitlines()
        assert re.fullmatch(
            rf"error: run directory {run_dir} is in use by another trainer: pid {first.pid} "
            rf"host \S+ since \S+ holds {run_dir}/train.lock; wait for it to finish or stop it "
            rf"\(stop it with kill -TERM {first.pid} on its host\)",
            line,
        ), line
        assert "Traceback" not in second.stdout + second.stderr
        assert last_step(run_dir) >= 1 and not (run_dir / "checkpoints" / "latest").exists()
    finally:
        first.kill()  # SIGKILL: the lock file stays, with the dead trainer's PID
        first.wait()
    assert f"pid {first.pid} " in (run_dir / "train.lock").read_text()

    # a third trainer takes the lock; SIGTERM during its set-up stops it before the first step
    log = tmp_path / "third.log"
    third = trainer(config, log)
    wait_until(lambda: ready_for(third.pid), third, log, "the stop handlers")
    third.send_signal(signal.SIGTERM)
    assert third.wait(timeout=300) == STOPPED_STATUS, tail(log)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert text.splitlines()[-1] == (
        "stopping at step 0 on SIGTERM before the first step: no checkpoint (nothing trained); "
        "rerun the same command to resume"
    ), text[-2000:]
    assert f"pid {third.pid} " in (run_dir / "train.lock").read_text()
    assert train_records(run_dir) == [], "steps of the killed run dropped, none trained"
    assert latest(run_dir) is None and stop_record(run_dir)["checkpoint"] is None


def test_a_second_ctrl_c_aborts_at_once(tmp_path):
    config = write_micro_run(tmp_path / "run", STOP_OVERRIDES, data_root=tmp_path)
    log = tmp_path / "train.log"
    proc = trainer(config, log)
    wait_until(lambda: ready_for(proc.pid), proc, log, "the stop handlers")
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 60
    while catches(proc.pid, signal.SIGINT):  # the first one restored the default action
        assert time.monotonic() < deadline and proc.poll() is None, tail(log)
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == -signal.SIGINT, tail(log)
    assert not (tmp_path / "run" / "train.stopped").exists()


def _rank_pid(torchrun: int, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(torchrun).children():
        try:
            if child.environ().get("RANK") == str(rank):
                return child.pid
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
def test_two_ranks_stop_after_the_same_step_when_only_one_is_signalled(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*STOP_OVERRIDES, "cluster.nproc_per_node=2"]
    config = write_micro_run(run_dir, overrides, data_root=tmp_path / "data")
    log = tmp_path / "torchrun.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    proc = start([*command, "--nproc_per_node", "2", "-m", "nemo_neko.train", str(config)], log)
    wait_until(lambda: last_step(run_dir) >= 3, proc, log, "step 3")
    rank1 = _rank_pid(proc.pid, 1)
    assert rank1 is not None
    os.kill(rank1, signal.SIGTERM)  # rank 1 only; rank 0 (which logs) learns it from the flag
    assert proc.wait(timeout=300) == 0, tail(log)  # under torchrun a stop exits 0
    step = last_step(run_dir)
    record = stop_record(run_dir)
    assert record["step"] == step and record["signal"] == "SIGTERM" and 3 <= step < 47
    assert latest(run_dir) == f"step_{step:08d}"
    ckpt = run_dir / "checkpoints" / latest(run_dir)
    check_checkpoint(ckpt, trainer_state=True, shards=True)
    assert sorted(p.name for p in (ckpt / "rng").iterdir()) == ["rank_00000.pt", "rank_00001.pt"]
    text = log.read_text()
    assert "Traceback" not in text and "FAILED" not in text, text[-3000:]
    assert f"stopping at step {step} on SIGTERM: checkpoint {ckpt};" in text
