"""On a CUDA GPU (NCCL): the NeKo layer forces task experts in bf16 and matches the stock router
bit for bit when not forcing. Skipped on machines without CUDA."""

import pytest
import torch

from nemo_neko.compat import megatron as mc
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.router import TaskGuidedRouter
from nemo_neko.moe.task_context import task_routing_scope
from nemo_neko.parallel import ParallelLayout, initialize_parallel
from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.models import build_moe_layer, tiny_moe_config


def _check_cuda(rank, world_size):
    initialize_parallel(ParallelLayout(), num_experts=8)
    config = tiny_moe_config(
        params_dtype=torch.bfloat16,
        bf16=True,
        moe_router_dtype="fp32",
        use_cpu_initialization=False,
    )
    routing = TaskRoutingConfig(task_to_expert=[2, 7])
    layer = build_moe_layer(config, routing).cuda().train()
    x = torch.randn(
        64, 2, config.hidden_size, device="cuda", dtype=torch.bfloat16, requires_grad=True
    )
    task_ids = torch.randint(0, 2, (2, 64))
    with task_routing_scope(task_ids):
        out, _ = layer(x)
        _, routing_map = layer.route(x)
    out.float().sum().backward()
    ids_T = task_ids.t().reshape(-1).cuda()
    forced = torch.tensor([2, 7], device="cuda")[ids_T]
    assert routing_map[torch.arange(ids_T.numel(), device="cuda"), forced].all()

    pg = mc.get_default_pg_collection()
    stock = mc.TopKRouter(config=config, pg_collection=pg).cuda()
    ours = TaskGuidedRouter(config=config, pg_collection=pg, routing=routing).cuda()
    ours.load_state_dict(stock.state_dict())
    for router in (stock, ours):
        router.set_layer_number(1)
        router.eval()
    with task_routing_scope(task_ids):
        got = ours(x.detach())
    want = stock(x.detach())
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.gpu
def test_task_guided_layer_on_cuda():
    run_distributed(_check_cuda, 1, backend="nccl")


def test_the_gpu_check_benchmark_runs_its_code_path_on_cpu(tmp_path):
    """``scripts/gpu_check.sh`` runs benchmarks/router_overhead.py; its path runs here small.

    In a subprocess, as the script runs: in pytest's own process its parallel set-up would leave
    Megatron's state and the CPU shims (patched torch device and type functions) to every later
    test of the session."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from benchmarks import router_overhead

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "figures.json"
    args = ["--tokens", "64", "--batch", "2", "--hidden", "32", "--ffn", "64", "--repeats", "2"]
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/router_overhead.py",
            *args,
            "--warmup",
            "1",
            "--json",
            str(out),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["ratio"] > 0 and figures["tflops_neko"] > 0 and figures["forced_share"] == 0.5
    assert router_overhead.moe_flops(10, 4, 8, 2, 2) == 3 * 2 * (10 * 2 * 3 * 4 * 8 + 10 * 4 * 2)
