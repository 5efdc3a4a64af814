"""The training loop: Megatron-Core model, DDP, optimizer, schedule, logging, validation, resume.

Run by every rank (torchrun / srun), from a saved run config::

    torchrun --nproc_per_node 2 -m nemo_neko.train runs/neko-tiny/config.yaml

Each step: this rank's micro-batches of the global batch go through
``get_forward_backward_func()`` (no pipelining, 1F1B or interleaved, from the layout) with the
per-token task ids in scope for the routers; then the optimizer step, the LR schedule, logging
(loss overall and per task, load-balancing loss, lr, grad norm, tokens/s, ETA, routing
statistics), validation and checkpoints at their intervals. A run restarts from its latest
complete checkpoint by itself.

SIGTERM, SIGINT and SIGUSR1 stop every rank after the same step (an all-reduce of a stop flag
after each step, :mod:`nemo_neko.train.stop`): the run saves its checkpoint, writes
``<run_dir>/train.stopped`` and :func:`train` raises :class:`~nemo_neko.train.stop.TrainingStopped`
(``python -m nemo_neko.train`` alone then exits with status 75: rerun to resume). Rank 0 holds
``<run_dir>/train.lock`` (``flock``) for the whole run: a second trainer on the run directory is
refused with :class:`~nemo_neko.utils.lock.LockedError` before it touches anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from nemo_neko.data.mixture import BatchSchedule, PackedMixture
from nemo_neko.data.tokenizer import TextTokenizer
from nemo_neko.model.build import NeKoModel
from nemo_neko.model.checkpoint import Checkpointer
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.layer import clear_recomputes, moe_layers, pending_recomputes
from nemo_neko.moe.stats import forced_share
from nemo_neko.parallel.context import ParallelContext
from nemo_neko.paths import RunPaths, checkpoint_name
from nemo_neko.train.freeze import freeze_parameters
from nemo_neko.train.logger import TrainingLogger
from nemo_neko.train.optim import BatchPlan, build_optimizer, plan_batches, wrap_ddp
from nemo_neko.train.stop import (
    TrainingStopped,
    signal_name,
    stop_signals,
    world_max,
    write_stop_record,
)
from nemo_neko.utils.lock import DirectoryLock, LockedError

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, or nothing to train on)."""


class Trainer:
    """Everything one rank holds for a run; :meth:`fit` trains to the end (or ``max_steps``).

    Built once from the run config; each component is built by its own module and passed in
    (the parallel context, the model, the data, the optimizer), never looked up in globals.
    """

    run: object
    """The :class:`~nemo_neko.config.RunConfig`."""
    paths: RunPaths
    parallel: ParallelContext
    routing: TaskRoutingConfig
    tokenizer: TextTokenizer
    model: NeKoModel
    chunks: list
    """The model chunks wrapped in Megatron's DDP (one per virtual pipeline stage)."""
    parameters: dict[str, int]
    """Frozen and trainable parameter elements on this rank (:mod:`nemo_neko.train.freeze`)."""
    plan: BatchPlan
    mixture: PackedMixture
    schedule: BatchSchedule
    validation: PackedMixture | None
    optimizer: object
    """Megatron's (chained, optionally distributed) optimizer."""
    scheduler: object
    """Megatron's ``OptimizerParamScheduler`` (warm-up + cosine)."""
    total_steps: int
    num_tasks: int
    """Training datasets (task ids ``0 .. num_tasks - 1``)."""
    forward_step: Callable
    forward_backward: Callable
    logger: TrainingLogger
    checkpointer: Checkpointer
    lock: DirectoryLock
    """``<run_dir>/train.lock``, held by global rank 0 from set-up to the end (:meth:`close`)."""
    step: int

    def __init__(self, run, run_dir: str | Path):
        from nemo_neko.parallel import initialize_parallel

        self.run, self.paths = run, RunPaths(run_dir)
        self.routing = run.task_routing()  # configuration errors before anything starts
        self.parallel = ctx = initialize_parallel(
            run.model.parallel,
            seed=run.seed,
            backend=run.cluster.backend,
            num_experts=run.model.num_experts,
            num_layers=run.model.num_layers,
        )
        self.lock = self._lock_run_dir()  # before anything in the run directory is written
        try:
            self._build(run, ctx)
        except BaseException:
            self.close()
            raise

    def _build(self, run, ctx: ParallelContext) -> None:
        from nemo_neko.compat import megatron as mc
        from nemo_neko.train.data import build_mixture, prepare_tokenizer, validation_mixture
        from nemo_neko.train.step import make_forward_step

        self.tokenizer = prepare_tokenizer(run, self.paths.root)
        self.model = run.model.build(
            routing=self.routing,
            parallel=ctx,
            tokenizer_vocab=self.tokenizer.vocab_size,
            max_sequence_length=run.data.seq_length,
        )
        self.parameters = freeze_parameters(self.model.chunks, run.train)
        self.chunks = wrap_ddp(
            self.model.config, self.model.chunks, run.train.use_distributed_optimizer
        )
        self.model.config.finalize_model_grads_func = mc.finalize_model_grads

        self.plan = plan_batches(
            run.train.global_batch_tokens,
            run.data.seq_length,
            run.train.micro_batch_size,
            ctx.dp_size,
        )
        self.mixture = build_mixture(
            run, run.data.train, self.tokenizer, self.paths.root, run.train.epochs
        )
        self.schedule = BatchSchedule(
            self.mixture,
            self.plan.global_batch_sequences,
            self.plan.micro_batch_size,
            ctx.dp_rank,
            ctx.dp_size,
        )
        self.total_steps = min(
            self.schedule.num_steps, run.train.max_steps or self.schedule.num_steps
        )
        if self.total_steps < 1:
            raise TrainingError(
                f"the mixture packs into {len(self.mixture)} sequences, fewer than one global batch of "
                f"{self.plan.global_batch_sequences}: lower train.global_batch_tokens or add data"
            )
        self.optimizer, self.scheduler = build_optimizer(
            run.train, run.model, self.chunks, self.total_steps
        )
        self.model.config.grad_scale_func = self.optimizer.scale_loss
        self.validation = validation_mixture(run, self.tokenizer, self.paths.root)
        self.num_tasks = len(run.data.train)
        self.forward_step = make_forward_step(
            num_tasks=self.num_tasks,
            packed_attention=self.model.use_te,
            parallel=ctx,
            prompt_loss_weight=run.train.prompt_loss_weight,
        )
        self.forward_backward = mc.get_forward_backward_func()
        self.logger = TrainingLogger(
            self.paths.root,
            enabled=ctx.is_logging_rank,
            total_steps=self.total_steps,
            tensorboard=run.train.tensorboard,
            wandb_project=run.train.wandb_project,
            run_name=run.name,
        )
        self.checkpointer = Checkpointer(self.paths.checkpoints, keep=run.train.keep_checkpoints)
        self.step = 0

    def _lock_run_dir(self) -> DirectoryLock:
        """Global rank 0 takes the run directory's lock; every rank learns whether it got it.

        Raises:
            LockedError: another trainer holds it (on rank 0: its PID and host).
        """
        lock = DirectoryLock(self.paths.train_lock, what=f"run directory {self.paths.root}")
        refusal = None
        if dist.get_rank() == 0:
            try:
                if not lock.acquire():
                    log.warning("%s: no flock on this file system; not guarded", lock.path)
            except LockedError as error:
                refusal = error
        if world_max(int(refusal is not None)):
            raise refusal or LockedError(f"run directory {self.paths.root}: locked (see rank 0)")
        if lock.held:
            self.paths.stopped.unlink(missing_ok=True)  # a new training: no stop recorded yet
        return lock

    def close(self) -> None:
        """Release the run directory (the lock); the process group stays."""
        self.lock.release()

    # -- state ------------------------------------------------------------------------------------

    def trainer_state(self) -> dict:
        return {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "data": self.schedule.state_dict(),
            "world_size": dist.get_world_size(),
            "layout": vars(self.parallel.layout).copy(),
            "task_to_expert": list(self.routing.task_to_expert),
            "task_names": list(self.routing.task_names),
        }

    def maybe_resume(self) -> None:
        self.checkpointer.clean_incomplete()
        latest = self.checkpointer.latest()
        if latest is None:
            init_from = self.run.train.init_from or (self.paths.prepared_base() or {}).get(
                "checkpoint"
            )
            if init_from:
                source = Checkpointer(init_from).resolve_model_path()
                self.checkpointer.load(
                    source, self.chunks, optimizer=None, trainer_state_required=False
                )
                self.logger.note(f"initialised the model from {source}")
            return
        state = self.checkpointer.load(latest, self.chunks, self.optimizer)
        if state["task_names"] != list(self.routing.task_names):
            raise TrainingError(
                f"{latest}: trained on datasets {state['task_names']}, this config has "
                f"{list(self.routing.task_names)}; task ids would not match"
            )
        self.scheduler.load_state_dict(state["scheduler"])
        self.schedule.load_state_dict(state["data"])
        self.step = int(state["step"])
        self.logger.note(f"resumed from {latest} at step {self.step}")

    def save(self) -> None:
        path = self.checkpointer.save(self.step, self.chunks, self.optimizer, self.trainer_state())
        self.logger.note(f"saved checkpoint {path}")

    # -- steps ------------------------------------------------------------------------------------

    def _iterators(self, micro_batches):
        if len(self.chunks) == 1:
            return iter(micro_batches)
        return [iter(micro_batches) for _ in self.chunks]

    def _reduce_losses(self, losses: list[dict]) -> tuple[float, list[float], int]:
        """Mean target-token loss over the global batch, per task, and the token count."""
        totals = torch.zeros(2 + 2 * self.num_tasks, dtype=torch.float64)
        for item in losses or []:
            totals[:2] += item["lm loss"].double().cpu()
            totals[2:] += item["task loss"].double().cpu().reshape(-1)
        if self.parallel.holds_losses:
            dist.all_reduce(totals, group=self.parallel.dp_cp)
        count = int(totals[1])
        per_task = totals[2:].view(-1, 2)
        task_means = [float(s / c) if c > 0 else float("nan") for s, c in per_task.tolist()]
        return (float(totals[0] / count) if count else float("nan")), task_means, count

    def train_step(self) -> dict:
        micro_batches = self.schedule.micro_batches(self.step)
        for chunk in self.chunks:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses = self.forward_backward(
            forward_step_func=self.forward_step,
            data_iterator=self._iterators(micro_batches),
            model=self.chunks,
            num_microbatches=self.plan.micro_batches_per_step,
            seq_length=self.run.data.seq_length,
            micro_batch_size=self.plan.micro_batch_size,
            forward_only=False,
        )
        queued = pending_recomputes(self.chunks)
        if queued:  # a checkpointed forward whose backward never ran: its ids would go stale
            clear_recomputes(self.chunks)
            raise TrainingError(
                f"step {self.step}: {queued} recomputed MoE forward(s) never ran their backward"
            )
        ok, grad_norm, _ = self.optimizer.step()
        if not ok:
            raise TrainingError(f"step {self.step}: optimizer step skipped (inf/nan gradients)")
        self.scheduler.step(increment=1)
        self.step += 1
        self.schedule.step = self.step
        loss, task_losses, tokens = self._reduce_losses(losses)
        if self.parallel.holds_losses and not np.isfinite(loss):
            raise TrainingError(f"step {self.step}: loss is {loss}")
        return {
            "loss": loss,
            "task_losses": task_losses,
            "target_tokens": tokens,
            "grad_norm": float(grad_norm or 0.0),
        }

    def validate(self) -> dict | None:
        """Validation loss on held-out sequences (eval mode: plain top-k routing, no task ids)."""
        if self.validation is None or len(self.validation) == 0:
            return None
        unit = self.plan.micro_batch_size * self.plan.data_parallel_size
        size = max(unit, min(self.run.train.eval_sequences, len(self.validation)) // unit * unit)
        if size > len(self.validation):
            return None
        schedule = BatchSchedule(
            self.validation,
            size,
            self.plan.micro_batch_size,
            self.schedule.dp_rank,
            self.schedule.dp_size,
        )
        for chunk in self.chunks:
            chunk.eval()
        try:
            with torch.no_grad():
                losses = self.forward_backward(
                    forward_step_func=self.forward_step,
                    data_iterator=self._iterators(schedule.micro_batches(0)),
                    model=self.chunks,
                    num_microbatches=schedule.num_micro_batches,
                    seq_length=self.run.data.seq_length,
                    micro_batch_size=self.plan.micro_batch_size,
                    forward_only=True,
                )
        finally:
            for chunk in self.chunks:
                chunk.train()
        loss, task_losses, _ = self._reduce_losses(losses)
        return {"loss": loss, "task_losses": task_losses}

    # -- logging ----------------------------------------------------------------------------------

    def routing_table(self) -> torch.Tensor:
        """Tokens per (expert, task slot, gate/forced), summed over layers and ranks (collective)."""
        from nemo_neko.moe.stats import collect_routing_stats

        layers = moe_layers(self.chunks)
        stats = collect_routing_stats(layers, group=self.parallel.ep)
        table = torch.zeros(self.run.model.num_experts, self.num_tasks + 1, 2, dtype=torch.float64)
        for counts in stats.values():
            table += counts.double()
        dist.all_reduce(table, group=self.parallel.expt_dp)
        dist.all_reduce(table, group=self.parallel.pp)
        return table

    def _aux_losses(self) -> dict[str, float]:
        from nemo_neko.compat import megatron as mc

        num_moe_layers = max(
            1, sum(self.run.model.is_moe_layer(i) for i in range(self.run.model.num_layers))
        )
        values = {}
        for name in ("load_balancing_loss", "z_loss"):
            tensor = mc.local_aux_loss_values(name)
            total = torch.zeros(1, dtype=torch.float64)
            if tensor is not None:
                total += float(tensor.sum())
            dist.all_reduce(total, group=self.parallel.pp)  # all layers
            if tensor is not None or total.item():
                values[name] = total.item() / num_moe_layers / self.plan.micro_batches_per_step
        mc.clear_aux_losses()
        return values

    def _log_step(self, result: dict, tokens_per_s: float) -> None:
        run = self.run
        names = [spec.name for spec in run.data.train]
        scalars = {
            "loss": result["loss"],
            "grad_norm": result["grad_norm"],
            "lr": self.scheduler.optimizer.param_groups[0]["lr"],
            "tokens_per_s": tokens_per_s,
            "target_tokens": result["target_tokens"],
        }
        scalars.update({f"loss/{n}": v for n, v in zip(names, result["task_losses"])})
        scalars.update(self._aux_losses())
        line = None
        if self.step % run.train.log_interval == 0 or self.step == self.total_steps:
            table = self.routing_table()
            for t, name in enumerate(names):
                for e in range(run.model.num_experts):
                    scalars[f"routing/{name}/expert{e}"] = float(table[e, t + 1].sum())
            scalars["routing/forced_share"] = forced_share(table)
            line = (
                f"step {self.step:>6}/{self.total_steps} | loss {result['loss']:.4f}"
                f" | lb {scalars.get('load_balancing_loss', float('nan')):.3f}"
                f" | lr {scalars['lr']:.2e} | gnorm {result['grad_norm']:.3f}"
                f" | {tokens_per_s / 1e3:.1f}k tok/s | ETA {self.logger.eta(self.step)}"
            )
        self.logger.log(self.step, scalars, kind="train", line=line)

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self) -> dict:
        self.maybe_resume()
        self.logger.note(
            f"training {self.run.model.name}: {self.total_steps} steps of {self.plan.global_batch_sequences} "
            f"sequences x {self.run.data.seq_length} tokens ({self.plan.micro_batches_per_step} micro-batches "
            f"of {self.plan.micro_batch_size} per rank), {len(self.mixture)} sequences over {self.run.train.epochs} epochs"
        )
        if self.parameters["frozen"]:
            total = self.parameters["frozen"] + self.parameters["trainable"]
            self.logger.note(
                f"trainable parameters on this rank: {self.parameters['trainable']:,} of {total:,} "
                f"({self.parameters['frozen']:,} frozen)"
            )
        last = {}
        stop = stop_signals().install()  # idempotent: keeps a signal noted during set-up
        self.logger.start(self.step)
        if signum := stop.agree():
            self._stop(signum, early=True)
        while self.step < self.total_steps:
            start = time.perf_counter()
            result = self.train_step()
            elapsed = time.perf_counter() - start
            tokens = self.plan.tokens_per_step
            self._log_step(result, tokens / elapsed)
            last = result
            if self.run.train.eval_interval and self.step % self.run.train.eval_interval == 0:
                self._log_validation()
            if self.run.train.save_interval and self.step % self.run.train.save_interval == 0:
                self.save()
            if (signum := stop.agree()) and self.step < self.total_steps:
                self._stop(signum)
        if self.run.train.eval_interval and self.step % self.run.train.eval_interval:
            self._log_validation()
        latest = self.checkpointer.latest()
        if latest is None or latest.name != checkpoint_name(self.step):
            self.save()
        self.logger.close()
        return last

    def _stop(self, signum: int, early: bool = False) -> None:
        """Every rank, after the same step (``early``: before the first): save unless nothing
        was trained since the last checkpoint, record the stop, raise :class:`TrainingStopped`."""
        latest = self.checkpointer.latest()
        if self.step > 0 and (latest is None or latest.name != checkpoint_name(self.step)):
            self.save()
            latest = self.checkpointer.latest()
        name = signal_name(signum)
        stopped = TrainingStopped(self.step, name, str(latest) if latest else None)
        if dist.get_rank() == 0:
            write_stop_record(self.paths.stopped, stopped, self.total_steps)
        self.logger.note(
            f"stopping at step {self.step} on {name}{' before the first step' if early else ''}: "
            + (f"checkpoint {latest}" if latest else "no checkpoint (nothing trained)")
            + "; rerun the same command to resume"
        )
        self.logger.close()
        raise stopped

    def _log_validation(self) -> None:
        result = self.validate()
        if result is None:
            return
        names = [spec.name for spec in self.run.data.train]
        scalars = {
            "loss": result["loss"],
            **{f"loss/{n}": v for n, v in zip(names, result["task_losses"])},
        }
        line = f"validation at step {self.step}: loss {result['loss']:.4f} | " + " ".join(
            f"{n} {v:.3f}" for n, v in zip(names, result["task_losses"]) if np.isfinite(v)
        )
        self.logger.log(self.step, scalars, kind="validation", line=line)


def train(run, run_dir: str | Path) -> dict:
    """Train ``run`` in ``run_dir`` (resuming from its latest checkpoint); returns the last step's
    figures.

    The stop signals are handled from here on (for the rest of the process, see
    :mod:`nemo_neko.train.stop`).

    Raises:
        TrainingStopped: a signal stopped the run (after saving; rerun to resume).
        LockedError: another trainer runs in ``run_dir``.
    """
    from nemo_neko.parallel import destroy_parallel

    stop_signals().install()  # a signal during set-up is noted, and honoured before step one
    trainer = None
    try:
        trainer = Trainer(run, run_dir)
        return trainer.fit()
    finally:
        if trainer is not None:
            trainer.close()
        destroy_parallel()
