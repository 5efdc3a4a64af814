"""CPU shims: what Megatron-Core needs to run on a machine without CUDA (gloo backend).

Megatron-Core assumes a GPU in a few places that do not matter for the maths:

* ``torch.cuda.current_device()`` as an allocation device, ``torch.cuda.Stream`` /
  ``Event`` / ``current_stream`` / ``stream`` / ``synchronize`` for overlap and host syncs;
* hard-coded ``device="cuda"`` / ``.cuda()`` / ``pin_memory=True`` in the optimizer, gradient
  clipping, the pipeline schedules and the DDP buffers: on a CPU-only machine such a request
  can never succeed, so the tensor factories, ``Tensor.cuda`` and ``Tensor.to`` map it to the CPU
  (and drop ``pin_memory``); every other call is passed through untouched;
* type-name checks such as ``param.type() == "torch.cuda.FloatTensor"`` in Megatron's
  (distributed, mixed-precision) optimizers and gradient clipping: consistently with the above,
  the CPU plays the part of the CUDA device, so ``Tensor.type()`` reports CPU tensors under their
  ``torch.cuda.*`` names (and accepts those names for conversions);
* the model-parallel RNG tracker, which swaps *CUDA* generator states;
* the all-to-all token dispatcher, whose split sizes only become host ``numpy`` arrays when the
  counts live on a GPU (``maybe_move_tensor_to_cpu`` leaves CPU tensors alone, and gloo's
  ``all_to_all_single`` rejects tensors as split sizes);
* gradient clipping's fallbacks for apex's multi-tensor kernels (one Python call per tensor):
  replaced by PyTorch's ``_foreach`` ops, which compute the same norms and scales in a few calls;
* activation recomputation (``CheckpointFunction``), which saves and restores the CUDA
  generator's state next to the CPU one: without CUDA there is none to save;
* gathers and reduce-scatters of uneven pieces along the first dimension (the all-to-all
  dispatcher with expert tensor parallelism): gloo's ``all_gather`` needs equal sizes, so the
  pieces are padded to the largest and cut back (same values, a little more traffic).

:func:`apply_cpu_shims` installs stand-ins for the first two; it is a no-op when CUDA is
available and is never run at import time (``nemo_neko.parallel.initialize_parallel`` calls it).
The third is handled where the split sizes are produced: :func:`host_split_sizes` is called by
the NeKo all-to-all dispatcher after Megatron's own device-to-host step.
"""

from __future__ import annotations

import contextlib
import functools
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


_FACTORIES = (
    "tensor", "as_tensor", "empty", "zeros", "ones", "full", "arange", "rand", "randn",
    "randint", "randperm", "empty_like", "zeros_like", "ones_like", "full_like", "eye", "linspace",
)  # fmt: skip


def _is_accelerator(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int) and not isinstance(device, bool)


def _host_kwargs(kwargs: dict) -> dict:
    if _is_accelerator(kwargs.get("device")):
        kwargs["device"] = "cpu"
    if kwargs.get("pin_memory"):
        kwargs["pin_memory"] = False
    return kwargs


def _host_factory(factory):
    @functools.wraps(factory)
    def on_host(*args, **kwargs):
        return factory(*args, **_host_kwargs(kwargs))

    return on_host


def _patch_device_requests() -> None:
    for name in _FACTORIES:
        setattr(torch, name, _host_factory(getattr(torch, name)))
    tensor_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and _is_accelerator(args[0]):
            args = ("cpu", *args[1:])
        return tensor_to(self, *args, **_host_kwargs(kwargs))

    def cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
        return self

    tensor_type = torch.Tensor.type

    def type_(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None and not kwargs:
            name = tensor_type(self)
            return (
                name if name.startswith("torch.cuda.") else name.replace("torch.", "torch.cuda.", 1)
            )
        if isinstance(dtype, str):
            dtype = dtype.replace("torch.cuda.", "torch.", 1)
        return tensor_type(self, dtype, non_blocking, **kwargs)

    torch.Tensor.to = to
    torch.Tensor.cuda = cuda
    torch.Tensor.type = type_
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self


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


def _foreach_l2_norm(chunk_size, noop_flag, tensor_lists, per_tensor, *args):
    """Drop-in for ``local_multi_tensor_l2_norm``: the l2 norm of all tensors, ``[1]``."""
    norms = [norm for tensors in tensor_lists if tensors for norm in torch._foreach_norm(tensors)]
    total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
    return total.reshape(1).float(), None


def _foreach_scale(chunk_size, noop_flag, tensor_lists, scale):
    """Drop-in for ``local_multi_tensor_scale``: ``dst = src * scale`` for each pair."""
    sources, targets = tensor_lists
    if not sources:
        return
    if all(a is b for a, b in zip(sources, targets)):
        torch._foreach_mul_(targets, scale)
    else:
        torch._foreach_copy_(targets, torch._foreach_mul(sources, scale))


def _use_foreach_clipping() -> None:
    from nemo_neko.compat.megatron import megatron_clip_grads_module, megatron_utils_module

    clip, utils = megatron_clip_grads_module(), megatron_utils_module()
    if clip.l2_norm_impl is utils.local_multi_tensor_l2_norm:
        clip.l2_norm_impl = _foreach_l2_norm
    if clip.multi_tensor_scale_impl is utils.local_multi_tensor_scale:
        clip.multi_tensor_scale_impl = _foreach_scale


def _no_cuda_rng_state(*args, **kwargs) -> None:
    """Stand-in for ``tensor_parallel.random._get_cuda_rng_state`` without CUDA: no state."""
    return None


def _skip_cuda_rng_state(new_state=None, *args, **kwargs) -> None:
    """Stand-in for ``tensor_parallel.random._set_cuda_rng_state`` without CUDA: nothing to set
    (the CPU generator and the CPU tracker are restored by Megatron's own code around it)."""


def _recompute_without_cuda_rng() -> None:
    """Activation recomputation (``CheckpointFunction``) saves and restores the CUDA generator's
    state with the CPU one; without CUDA there is only the CPU one."""
    from nemo_neko.compat.megatron import megatron_random_module

    random = megatron_random_module()
    random._get_cuda_rng_state = _no_cuda_rng_state
    random._set_cuda_rng_state = _skip_cuda_rng_state


def _uneven_gather(original):
    """``_gather_along_first_dim`` for gloo, whose ``all_gather`` wants equal sizes: uneven
    pieces (``output_split_sizes``, e.g. the all-to-all dispatcher's expert-TP gather) are
    padded to the largest, gathered, and cut back."""

    def gather(input_, group, output_split_sizes=None, use_global_buffer=False):
        if output_split_sizes is None or group.size() == 1:
            return original(input_, group, output_split_sizes, use_global_buffer)
        sizes = [int(n) for n in output_split_sizes]
        longest = max(sizes)
        padded = input_.new_zeros((longest, *input_.shape[1:]))
        padded[: input_.shape[0]] = input_
        pieces = [torch.empty_like(padded) for _ in sizes]
        torch.distributed.all_gather(pieces, padded.contiguous(), group=group)
        return torch.cat([piece[:n] for piece, n in zip(pieces, sizes)], dim=0)

    return gather


def _uneven_reduce_scatter(original):
    """``_reduce_scatter_along_first_dim`` for gloo with uneven ``input_split_sizes``: each
    piece padded to the largest, reduce-scattered as equal pieces, this rank's cut back."""

    def reduce_scatter(input_, group, input_split_sizes=None, use_global_buffer=False):
        if input_split_sizes is None or group.size() == 1:
            return original(input_, group, input_split_sizes, use_global_buffer)
        sizes = [int(n) for n in input_split_sizes]
        longest = max(sizes)
        stacked = input_.new_zeros((len(sizes) * longest, *input_.shape[1:]))
        for i, piece in enumerate(torch.split(input_, sizes, dim=0)):
            stacked[i * longest : i * longest + sizes[i]] = piece
        output = input_.new_empty((longest, *input_.shape[1:]))
        torch.distributed.reduce_scatter_tensor(output, stacked, group=group)
        return output[: sizes[group.rank()]].contiguous()

    return reduce_scatter


def _gloo_uneven_collectives() -> None:
    from nemo_neko.compat.megatron import megatron_mappings_module

    mappings = megatron_mappings_module()
    if not getattr(mappings._gather_along_first_dim, "nemo_neko_shim", False):
        gather = _uneven_gather(mappings._gather_along_first_dim)
        reduce_scatter = _uneven_reduce_scatter(mappings._reduce_scatter_along_first_dim)
        gather.nemo_neko_shim = reduce_scatter.nemo_neko_shim = True
        mappings._gather_along_first_dim = gather
        mappings._reduce_scatter_along_first_dim = reduce_scatter


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
        _patch_device_requests()
        _use_foreach_clipping()
        _recompute_without_cuda_rng()
        _gloo_uneven_collectives()
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
