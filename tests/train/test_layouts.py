"""Every layout the shipped configs use, trained in miniature and compared to one process.

Each layout trains the same micro run (4 layers, 8 experts, 2 tasks) for four steps from the same
initial checkpoint, on the same global batches, in a real gloo world; its losses, per-task
losses, gradient norms and routing counts per step must equal the single-process run's to float
tolerance (:mod:`nemo_neko.testing.layouts`). The shipped 8x7b and 8x22b configs, shrunk in width
with their structure kept (GQA ratio, MoE layers, interleaved pipeline / TP with SP, the
distributed optimizer), train three steps the same way against their own one-process runs.
"""

import pytest

from nemo_neko.testing.layouts import max_differences, train_layout, write_layout_runs

TOLERANCE = {"loss": 2e-5, "task_losses": 5e-5, "grad_norm": 1e-4, "routing": 0}
"""Float32 sums in another order (TP splits, pipeline sends, DP all-reduces) move the loss by
~1e-6; the routing counts (integers) must be equal."""

LAYOUTS = {
    "pp2": (2, ["model.parallel.pipeline=2"]),
    "pp2_vpp2": (2, ["model.parallel.pipeline=2", "model.parallel.virtual_pipeline=2"]),
    "tp2_sp": (2, ["model.parallel.tensor=2", "model.parallel.sequence_parallel=true"]),
    "ep2": (2, ["model.parallel.expert=2"]),
    "dp2_distributed_optimizer": (2, ["train.use_distributed_optimizer=true"]),
    "pp2_ep2": (4, ["model.parallel.pipeline=2", "model.parallel.expert=2"]),
    "tp2_ep2_sp": (
        2,
        [
            "model.parallel.tensor=2",
            "model.parallel.sequence_parallel=true",
            "model.parallel.expert=2",
            "model.parallel.expert_tensor=1",
        ],
    ),
}

WORLD_8 = (
    8,
    [
        "model.parallel.tensor=2",
        "model.parallel.sequence_parallel=true",
        "model.parallel.pipeline=2",
        "model.parallel.expert=2",
    ],
)

MINI = {
    # Mixtral 8x7B: GQA 32/8, TP1 PP4 VPP8 EP8 -> PP2 VPP2 EP2 on 4 ranks (one layer per chunk)
    "8x7b": (
        ["model.num_attention_heads=8", "model.num_query_groups=2", "model.vocab_size=null"],
        4,
        [
            "model.parallel.pipeline=2",
            "model.parallel.virtual_pipeline=2",
            "model.parallel.expert=2",
        ],
    ),
    # Mixtral 8x22B: GQA 48/8, TP2 SP PP8 EP8 -> TP2 SP PP2 EP2 on 8 ranks (ETP = TP as shipped)
    "8x22b": (
        [
            "model.hidden_size=96",
            "model.num_attention_heads=12",
            "model.num_query_groups=2",
            "model.kv_channels=8",
            "model.vocab_size=null",
        ],
        *WORLD_8,
    ),
}
"""Width shrunk (hidden 64 from the micro run, heads 8 / 12 of 16 channels), precision float32 for
a tight comparison; everything else is the shipped file's (distributed optimizer, RoPE base)."""


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The shared initial checkpoint and the one-process reference records."""
    root = tmp_path_factory.mktemp("layouts")
    shared = write_layout_runs(root)
    reference = train_layout(root, "one_process", 1, [], shared=shared)
    return root, shared, reference


def _check(records, reference, name):
    diff = max_differences(records, reference)
    print(f"layout {name}: max differences {diff}")
    for key, limit in TOLERANCE.items():
        assert diff[key] <= limit, f"{name}: {key} differs by {diff[key]} (limit {limit})"
    return diff


def test_the_reference_learns_and_routes_every_token(tiny_runs):
    _, _, reference = tiny_runs
    assert len(reference) == 4
    assert reference[-1]["loss"] < reference[0]["loss"]
    routing = reference[0]["routing"]  # [E][slot][gate, forced]; slot 0: no task (padding)
    forced = sum(e[t][1] for e in routing for t in range(1, len(e)))
    gate = sum(e[t][0] for e in routing for t in range(1, len(e)))
    assert forced > 0 and gate == forced, "top-2 with forcing: one forced and one gate choice"
    assert sum(e[0][1] for e in routing) == 0, "padding is never forced"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_trains_like_one_process(tiny_runs, name):
    root, shared, reference = tiny_runs
    world, layout = LAYOUTS[name]
    _check(train_layout(root, name, world, layout, shared=shared), reference, name)


@pytest.mark.slow
def test_world_of_8_tp2_pp2_ep2_trains_like_one_process(tiny_runs):
    root, shared, reference = tiny_runs
    world, layout = WORLD_8
    _check(train_layout(root, "tp2_pp2_ep2", world, layout, shared=shared), reference, "world 8")


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MINI))
def test_shipped_big_config_shrunk_in_width_trains_three_steps(tmp_path, model):
    width, world, layout = MINI[model]
    shared = write_layout_runs(tmp_path, model, [*width, "model.params_dtype=float32"])
    reference = train_layout(tmp_path, "one_process", 1, [], model=model, shared=shared, steps=3)
    records = train_layout(tmp_path, model, world, layout, model=model, shared=shared, steps=3)
    _check(records, reference, f"{model} shrunk")


@pytest.mark.slow
def test_frozen_tied_embeddings_stay_tied_over_pipeline_stages(tmp_path):
    """Tied embeddings under PP2 live on both ends of the pipeline: freezing them freezes the last
    stage's copy too (else it trains alone and the run leaves the one-process run)."""
    frozen = ["train.freeze_embeddings=true", "model.share_embeddings_and_output_weights=true"]
    shared = write_layout_runs(tmp_path, overrides=frozen)
    reference = train_layout(tmp_path, "one_process", 1, [], shared=shared, steps=3)
    records = train_layout(
        tmp_path, "pp2", 2, ["model.parallel.pipeline=2"], shared=shared, steps=3
    )
    _check(records, reference, "PP2, frozen tied embeddings")


PP2_EP2 = ["model.parallel.pipeline=2", "model.parallel.expert=2"]
TP2_SP = ["model.parallel.tensor=2", "model.parallel.sequence_parallel=true"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "first,then,optimizer",
    [
        ((4, PP2_EP2), (2, TP2_SP), "false"),
        ((2, TP2_SP), (4, PP2_EP2), "true"),
    ],
    ids=["pp2xep2_to_tp2", "tp2_to_pp2xep2_distributed_optimizer"],
)
def test_checkpoint_resumes_under_another_layout_as_the_uninterrupted_run(
    tiny_runs, first, then, optimizer
):
    """Two steps under one layout, saved (model and optimizer, Megatron's reshardable format);
    two more under another from that checkpoint: steps 3-4 continue the one-process run."""
    root, shared, reference = tiny_runs
    name = f"reshard_{len(first[1])}_{optimizer}"
    shared = [*shared, f"train.use_distributed_optimizer={optimizer}"]
    before = train_layout(root, name, first[0], first[1], shared=shared, steps=2, save=True)
    assert (root / name / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    after = train_layout(root, name, then[0], then[1], shared=shared, steps=4)
    assert [r["step"] for r in after] == [3, 4], "resumed at step 2"
    _check(before, reference[:2], f"{name} before")
    _check(after, reference[2:], f"{name} after resharding")
