"""ParallelLayout.check names the rule a layout breaks, before anything is built."""

import pytest

from nemo_neko.parallel import LayoutError, ParallelLayout


@pytest.mark.parametrize(
    "layout,world,kwargs,message",
    [
        (
            ParallelLayout(tensor=2, pipeline=2),
            6,
            {},
            r"world size 6 is not divisible by TP x PP x CP = 2 x 2 x 1 = 4",
        ),
        (
            ParallelLayout(expert=4),
            8,
            {"num_experts": 6},
            r"num_moe_experts=6 is not divisible by expert parallel size EP=4",
        ),
        (
            ParallelLayout(expert=3),
            4,
            {"num_experts": 6},
            r"not divisible by ETP x EP x PP = 1 x 3 x 1 = 3",
        ),
        (
            ParallelLayout(tensor=2),
            2,
            {"num_experts": 8},
            r"MoE with tensor parallelism needs sequence_parallel=True",
        ),
        (
            ParallelLayout(sequence_parallel=True),
            1,
            {},
            r"sequence_parallel needs tensor parallel size TP > 1",
        ),
        (
            ParallelLayout(pipeline=2, virtual_pipeline=2),
            2,
            {"num_layers": 6},
            r"num_layers=6 is not divisible by PP x VPP = 2 x 2",
        ),
        (
            ParallelLayout(virtual_pipeline=2),
            1,
            {},
            r"virtual_pipeline needs pipeline parallel size PP > 1",
        ),
        (
            ParallelLayout(pipeline=4),
            4,
            {"num_layers": 6},
            r"num_layers=6 is not divisible by pipeline parallel size PP=4",
        ),
        (ParallelLayout(tensor=0), 1, {}, r"tensor parallel size must be a positive int"),
        (ParallelLayout(expert=2), 2, {}, r"EP=2 needs an MoE model"),
    ],
)
def test_broken_rules_are_named(layout, world, kwargs, message):
    with pytest.raises(LayoutError, match=message):
        layout.check(world, **kwargs)


def test_valid_layouts():
    ParallelLayout(
        tensor=2, pipeline=4, expert=8, sequence_parallel=True, virtual_pipeline=2
    ).check(64, num_experts=8, num_layers=32)
    ParallelLayout(expert=2).check(2, num_experts=8)
    assert ParallelLayout(tensor=2, pipeline=2).data_parallel_size(16) == 4
