"""CPU shims: what Megatron-Core needs to run on a machine without CUDA (gloo backend).

Megatron-Core assumes a GPU in a few places that do not matter for the maths:

* ``torch.cuda.current_device()`` as an allocation device, ``torch.cuda.Stream`` /
  ``Event`` / ``current_stream`` / ``stream`` / ``synchronize`` for overlap and host syncs;
* the model-parallel RNG tracker, which swaps *CUDA* generator states;
* the all-to-all token dispatcher, whose split sizes only become host ``numpy`` arrays when the
  counts live on a GPU (``maybe_move_tensor_to_cpu`` leaves CPU tensors alone, and gloo's
  ``all_to_all_single`` rejects tensors as split sizes).

:func:`apply_cpu_shims` installs stand-ins for the first two; it is a no-op when CUDA is
available and is never run at import time (``nemo_neko.parallel.initialize_parallel`` calls it).
The third is handled where the split sizes are produced: :func:`host_split_sizes` is called by
the NeKo all-to-all dispatcher after Megatron's own device-to-host step.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

_APPLIED = False


def cuda_absent() -> bool:
    """True when this process cannot use CUDA (the case the shims are for)."""
    return not torch.cuda.is_available()


class _HostStream:
    """Stand-in for ``torch.cuda.Stream`` on CPU: every operation is already ordered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def wait_stream(self, stream: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def record_event(self, event: Any = None) -> _HostEvent:
        return _HostEvent()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _HostStream)

    def __hash__(self) -> int:
        return 0


class _HostEvent:
    """Stand-in for ``torch.cuda.Event`` on CPU."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, stream: Any = None) -> None:
        pass

    def wait(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, other: _HostEvent) -> float:
        return 0.0


_HOST_STREAM = _HostStream()


def _current_device() -> torch.device:
    return torch.device("cpu")


def _current_stream(device: Any | None = None) -> _HostStream:
    return _HOST_STREAM


def _stream_context(stream: Any = None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def _synchronize(device: Any | None = None) -> None:
    return None


def _make_cpu_rng_tracker() -> Any:
    """A Megatron RNG tracker whose named streams are CPU generator states."""
    from nemo_neko.compat.megatron import MODEL_PARALLEL_RNG_TRACKER_NAME, CudaRNGStatesTracker

    class CpuRNGStatesTracker(CudaRNGStatesTracker):
        """Megatron's tracker with the CUDA generator replaced by the CPU default generator.

        ``add`` seeds a fresh stream; ``fork`` swaps the process's CPU generator state for the
        named stream's state and back, exactly as the CUDA tracker does with CUDA states.
        """

        runs_on_cpu = True

        def add(self, name: str, seed: int) -> None:
            self._is_initialized = True
            if seed in self.seeds_:
                raise RuntimeError(f"seed {seed} already exists")
            self.seeds_.add(seed)
            if name in self.states_:
                raise RuntimeError(f"rng state {name} already exists")
            generator = torch.Generator()
            generator.manual_seed(seed)
            self.states_[name] = generator.get_state()

        @contextlib.contextmanager
        def fork(self, name: str = MODEL_PARALLEL_RNG_TRACKER_NAME):
            if name not in self.states_:
                raise RuntimeError(f"rng state {name} is not added")
            outer_state = torch.get_rng_state()
            outer_name = self._current_state_name
            torch.set_rng_state(self.states_[name])
            self._current_state_name = name
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(outer_state)
                self._current_state_name = outer_name

    return CpuRNGStatesTracker()


def apply_cpu_shims() -> bool:
    """Install the CPU stand-ins when CUDA is absent. Returns True when they are in place.

    Idempotent. With CUDA available nothing is touched and False is returned.
    """
    global _APPLIED
    if not cuda_absent():
        return False
    if not _APPLIED:
        torch.cuda.current_device = _current_device
        torch.cuda.current_stream = _current_stream
        torch.cuda.stream = _stream_context
        torch.cuda.Stream = _HostStream
        torch.cuda.Event = _HostEvent
        torch.cuda.synchronize = _synchronize
        _APPLIED = True

    from nemo_neko.compat.megatron import install_rng_tracker, installed_rng_tracker

    if not getattr(installed_rng_tracker(), "runs_on_cpu", False):
        install_rng_tracker(_make_cpu_rng_tracker())
    return True


def host_split_sizes(splits: Any) -> Any:
    """Split sizes as gloo/NCCL ``all_to_all_single`` wants them (host ints, not tensors).

    On GPU Megatron turns them into numpy arrays at its own sync point; on CPU they stay CPU
    tensors. Only CPU tensors are converted: GPU tensors are left for Megatron's sync point.
    """
    if isinstance(splits, torch.Tensor) and splits.device.type == "cpu":
        return splits.numpy()
    return splits


def as_int_list(splits: Any) -> list | None:
    """Split sizes (tensor, numpy array, list or None) as a list of Python ints."""
    if splits is None:
        return None
    if isinstance(splits, torch.Tensor):
        return [int(v) for v in splits.tolist()]
    if isinstance(splits, np.ndarray):
        return [int(v) for v in splits.tolist()]
    return [int(v) for v in splits]
