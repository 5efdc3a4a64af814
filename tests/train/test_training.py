"""Training on Megatron-Core, on CPU: token-based batching, the schedule, per-task loss, resume
after SIGKILL, resharded checkpoints, layout errors."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.runs import write_micro_run
from nemo_neko.train.optim import plan_batches, warmup_and_decay_steps
from nemo_neko.train.step import loss_func, prompt_mask

ROOT = Path(__file__).resolve().parents[2]


def metrics(run_dir: Path, kind: str = "train") -> dict[int, dict]:
    """The record of each step; fails when a step is there twice (a resumed run drops the steps
    it redoes before logging them again)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        item = json.loads(line)
        if item["kind"] == kind:
            assert item["step"] not in out, f"step {item['step']} logged twice"
            out[item["step"]] = item
    return out


def test_global_batch_in_tokens_becomes_sequences_and_accumulation():
    plan = plan_batches(2_000_000, 2048, micro_batch_size=1, dp_size=64)
    assert plan.global_batch_sequences == 1024 and plan.micro_batches_per_step == 16
    assert plan.tokens_per_step == 1024 * 2048
    odd = plan_batches(
        10_000, 1024, micro_batch_size=2, dp_size=2
    )  # 10 sequences -> 12 (multiple of 4)
    assert odd.global_batch_sequences == 12 and odd.micro_batches_per_step == 3
    assert plan_batches(100, 1024, 1, 1).global_batch_sequences == 1
    assert warmup_and_decay_steps(500, 0.1) == (50, 500)
    with pytest.raises(ValueError, match="must be >= 1"):
        plan_batches(1000, 100, 0, 1)


def test_loss_is_summed_over_target_tokens_and_split_by_task():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]])
    tasks = torch.tensor([[0, 0, 1, 1], [2, 2, -1, -1]])
    total, count, report = loss_func(mask, tasks, 3, per_token)
    assert float(total) == 2 + 3 + 5 + 6 and int(count) == 4
    assert report["lm loss"].tolist() == [16.0, 4.0]
    assert report["task loss"].tolist() == [[2.0, 1.0], [3.0, 1.0], [11.0, 2.0]]


def test_prompt_loss_weight_adds_prompt_tokens_to_the_gradient_but_not_the_report():
    # two samples packed in one row: [p p t t EOS][p t EOS] + padding; position j predicts j + 1
    segments = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, -1, -1]])
    targets = torch.tensor([[0, 1, 1, 1, 0, 0, 1, 0, 0, 0]], dtype=torch.float32)
    prompt = prompt_mask(targets, segments)
    assert prompt.tolist() == [[1, 0, 0, 0, 0, 1, 0, 0, 0, 0]]
    per_token = torch.arange(1.0, 11.0).reshape(1, 10)
    tasks = torch.tensor([[0] * 5 + [1] * 3 + [-1] * 2])
    plain = loss_func(targets, tasks, 2, per_token)
    weighted = loss_func(targets, tasks, 2, per_token, prompt_weight_mask=0.5 * prompt)
    assert float(plain[0]) == 2 + 3 + 4 + 7
    assert float(weighted[0]) == float(plain[0]) + 0.5 * (1 + 6)
    assert int(weighted[1]) == int(plain[1]) == 4  # still normalised by target tokens
    assert weighted[2]["lm loss"].tolist() == plain[2]["lm loss"].tolist() == [16.0, 4.0]
    assert torch.equal(weighted[2]["task loss"], plain[2]["task loss"])


def _train_micro(rank, world_size, config_path):
    from nemo_neko.config import load_run_config
    from nemo_neko.train.loop import train

    train(load_run_config(config_path), Path(config_path).parent)


def test_micro_run_learns_with_warmup_cosine_and_per_task_losses(tmp_path):
    run_dir = tmp_path / "run"
    config = write_micro_run(
        run_dir,
        ["train.lr=3e-3", "train.min_lr=3e-4", "train.warmup_fraction=0.25", "train.epochs=4"],
    )
    run_distributed(_train_micro, 1, str(config))
    steps = metrics(run_dir)
    n = max(steps)
    lrs = [steps[s]["lr"] for s in range(1, n + 1)]
    warmup = round(n * 0.25)
    assert lrs[warmup - 1] == pytest.approx(3e-3)  # linear warm-up reaches the peak
    assert all(a < b for a, b in zip(lrs[: warmup - 1], lrs[1:warmup]))
    assert all(a >= b for a, b in zip(lrs[warmup - 1 :], lrs[warmup:]))  # cosine decay
    assert lrs[-1] == pytest.approx(3e-4, rel=0.05)
    assert steps[n]["loss"] < 0.8 * steps[1]["loss"], "the loss must fall"
    for s in (1, n):
        assert {"loss/atis", "loss/td3", "load_balancing_loss", "grad_norm", "tokens_per_s"} <= set(
            steps[s]
        )
    for task in ("atis", "td3"):  # a step without a task's tokens logs null for it
        values = [steps[s][f"loss/{task}"] for s in steps if steps[s][f"loss/{task}"] is not None]
        assert values and all(math.isfinite(v) for v in values)
    # every labelled token went to its dataset's expert (padding tokens route by the gate alone)
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    state = torch.load(run_dir / "checkpoints" / latest / "trainer_state.pt", weights_only=False)
    assert 0 < steps[n]["routing/forced_share"] <= 0.5
    for task, expert in zip(state["task_names"], state["task_to_expert"]):
        counts = [sum(steps[s][f"routing/{task}/expert{e}"] for s in steps) for e in range(8)]
        assert counts[expert] >= sum(counts) / 2 > 0
    assert (
        latest == f"step_{n:08d}"
        and (run_dir / "checkpoints" / latest / "trainer_state.pt").exists()
    )
    assert (run_dir / "tensorboard").exists() is False  # switched off in the micro config


def _train_process(config: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "nemo_neko.train", str(config)],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )


def _finish(proc: subprocess.Popen, log: Path) -> None:
    """Waits for a training process; a failure shows the end of its log."""
    code = proc.wait(timeout=600)
    assert code == 0, f"training exited {code}; {log}:\n" + log.read_text()[-4000:]


@pytest.mark.slow
def test_sigkill_and_restart_reproduces_the_uninterrupted_losses(tmp_path):
    overrides = ["train.epochs=2", "train.save_interval=3", "train.lr=3e-3"]
    straight = tmp_path / "straight"
    config = write_micro_run(straight, overrides, data_root=tmp_path / "data")
    _finish(_train_process(config, tmp_path / "straight.log"), tmp_path / "straight.log")
    expected = metrics(straight)
    assert max(expected) >= 8

    killed = tmp_path / "killed"
    config = write_micro_run(killed, overrides, data_root=tmp_path / "data")
    proc = _train_process(config, tmp_path / "killed.log")
    pointer = killed / "checkpoints" / "latest"
    deadline = time.time() + 600
    while not (pointer.exists() and pointer.read_text().strip() == "step_00000006"):
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint at step 6"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(metrics(killed)) < max(expected), "the run must be killed before its end"
    _finish(_train_process(config, tmp_path / "resumed.log"), tmp_path / "resumed.log")
    assert "resumed from" in (tmp_path / "resumed.log").read_text()
    resumed = metrics(killed)
    assert sorted(resumed) == sorted(expected)
    for step, want in expected.items():
        assert resumed[step]["loss"] == pytest.approx(want["loss"], abs=1e-5), f"step {step}"


def _save_ep1_then_compare(rank, world_size, config_path, probe_path):
    """World 2: train 2 steps at EP=1 (DP=2) and save; record logits of a probe batch."""
    from nemo_neko.config import load_run_config
    from nemo_neko.train.loop import Trainer

    trainer = Trainer(load_run_config(config_path), Path(config_path).parent)
    for _ in range(2):
        trainer.train_step()
    trainer.save()
    torch.save(_probe_logits(trainer), f"{probe_path}.rank{rank}")


def _probe_logits(trainer):
    from nemo_neko.model.checkpoint import unwrap

    model = unwrap(trainer.chunks[0])
    model.eval()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, trainer.tokenizer.vocab_size, (2, 32), generator=gen)
    mask = torch.triu(torch.ones(32, 32, dtype=torch.bool), 1).view(1, 1, 32, 32)
    with torch.no_grad():
        return model(tokens, torch.arange(32).expand(2, 32), mask)


def _load_at_ep2(rank, world_size, config_path, probe_path):
    from nemo_neko.config import load_run_config
    from nemo_neko.train.loop import Trainer

    run = load_run_config(config_path)
    run.model.parallel.expert = 2
    trainer = Trainer(run, Path(config_path).parent)
    assert (
        trainer.chunks[0].module.decoder.layers[0].mlp.num_local_experts
        == run.model.num_experts // 2
    )
    trainer.maybe_resume()  # model and optimizer states, resharded from EP=1
    assert trainer.step == 2
    torch.testing.assert_close(
        _probe_logits(trainer), torch.load(f"{probe_path}.rank{rank}"), rtol=1e-5, atol=1e-5
    )
    trainer.chunks[0].train()
    result = trainer.train_step()  # the resharded optimizer state takes a step
    assert math.isfinite(result["loss"])


@pytest.mark.slow
def test_checkpoint_saved_at_ep1_loads_at_ep2(tmp_path):
    run_dir = tmp_path / "run"
    config = write_micro_run(run_dir, ["cluster.nproc_per_node=2", "train.epochs=2"])
    run_distributed(_save_ep1_then_compare, 2, str(config), str(tmp_path / "probe"))
    run_distributed(_load_at_ep2, 2, str(config), str(tmp_path / "probe"))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            [
                "cluster.nproc_per_node=3",
                "model.parallel.tensor=2",
                "model.parallel.sequence_parallel=true",
            ],
            r"world size 3 is not divisible by TP x PP x CP = 2 x 1 x 1 = 2",
        ),
        (
            ["cluster.nproc_per_node=3", "model.parallel.expert=3"],
            r"num_moe_experts=8 is not divisible by expert parallel size EP=3",
        ),
        (
            [
                "routing.assignment.max_tasks_per_expert=1",
                "model.num_experts=2",
                "model.moe_router_topk=1",
                "data.train=[{name: a, paths: [x]}, {name: b, paths: [y]}, {name: c, paths: [z]}]",
            ],
            r"more tasks mapped to one expert than max_tasks_per_expert=1",
        ),
    ],
)
def test_invalid_layouts_fail_before_anything_is_built(tmp_path, overrides, message, capsys):
    from nemo_neko.launch import launch
    from nemo_neko.testing.runs import compose_run

    cfg = compose_run(tmp_path / "run", overrides)
    with pytest.raises(ValueError, match=message):
        launch(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists(), "nothing may be written or started"
