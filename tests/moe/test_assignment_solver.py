"""The learned task -> expert assignment: exact balanced solver, affinity from routing counts,
mode ``learned`` and its one-line errors."""

import itertools
import json
import random
from collections import Counter

import pytest

from nemo_neko.moe.assignment import TaskAssignmentConfig, assign_tasks_to_experts
from nemo_neko.moe.assignment_solver import (
    affinity_document,
    affinity_from_counts,
    assignment_total,
    balanced_capacities,
    counts_from_figures,
    counts_from_stats,
    hungarian,
    solve_assignment,
)
from nemo_neko.moe.config import TaskRoutingConfig


def brute_force(affinity):
    """Lexicographically smallest balanced mapping of maximal total (every vector tried)."""
    datasets, experts = len(affinity), len(affinity[0])
    low, high = balanced_capacities(datasets, experts)
    best, choice = None, None
    for vector in itertools.product(range(experts), repeat=datasets):
        load = Counter(vector)
        if any(not low <= load.get(e, 0) <= high for e in range(experts)):
            continue
        total = assignment_total(affinity, vector)
        if best is None or total > best + 1e-9:
            best, choice = total, list(vector)
    return best, choice


def test_hand_checked_3x3_beats_greedy():
    # greedy takes d0 -> e0 (5) and leaves 1 + 1; the optimum gives e0 to d1: 4 + 4 + 1
    assert solve_assignment([[5, 4, 1], [4, 1, 1], [1, 1, 1]]) == [1, 0, 2]
    assert solve_assignment([[1, 2, 3], [3, 1, 2], [2, 3, 1]]) == [2, 0, 1]


def test_hand_checked_2x8_two_datasets_want_one_expert():
    affinity = [[0.0] * 8, [0.0] * 8]
    affinity[0][3], affinity[0][5] = 0.9, 0.8
    affinity[1][3], affinity[1][5] = 0.7, 0.1
    assert solve_assignment(affinity) == [5, 3]  # 0.8 + 0.7 > 0.9 + 0.1


def test_hand_checked_8x3_grouped():
    affinity = [
        [1.0, 0, 0],
        [1.0, 0, 0],
        [1.0, 0, 0],
        [1.0, 0.5, 0],  # e0 is full (3 = ceil(8 / 3)): d3 moves, losing the least
        [0, 1.0, 0],
        [0, 0, 1.0],
        [0, 0, 1.0],
        [0, 0.2, 0.3],
    ]
    experts = solve_assignment(affinity)
    assert experts == [0, 0, 0, 1, 1, 2, 2, 2]
    assert assignment_total(affinity, experts) == pytest.approx(6.8)


@pytest.mark.parametrize("datasets,experts", [(3, 3), (2, 5), (4, 3), (5, 2), (6, 4), (7, 3)])
def test_optimal_against_brute_force(datasets, experts):
    rng = random.Random(datasets * 100 + experts)
    for _ in range(8):
        affinity = [[rng.random() for _ in range(experts)] for _ in range(datasets)]
        best, expected = brute_force(affinity)
        got = solve_assignment(affinity)
        assert assignment_total(affinity, got) == pytest.approx(best, abs=1e-12)
        assert got == expected


@pytest.mark.parametrize("datasets,experts", [(3, 8), (8, 8), (9, 8), (19, 8), (5, 2)])
def test_balance_constraints(datasets, experts):
    rng = random.Random(0)
    affinity = [[rng.random() ** 4 for _ in range(experts)] for _ in range(datasets)]
    affinity[0] = [10.0] + [0.0] * (experts - 1)  # everyone would like e0: it still takes few
    for row in affinity[1:]:
        row[0] = 9.0
    load = Counter(solve_assignment(affinity))
    low, high = balanced_capacities(datasets, experts)
    if datasets <= experts:
        assert max(load.values()) == 1
    else:
        assert set(load) == set(range(experts))
        assert min(load.values()) == low and max(load.values()) == high
        assert sum(1 for n in load.values() if n == high) == datasets % experts


def test_ties_are_broken_by_dataset_then_expert_index():
    assert solve_assignment([[0.0] * 4] * 3) == [0, 1, 2]
    assert solve_assignment([[1.0] * 3] * 8) == [0, 0, 0, 1, 1, 1, 2, 2]
    # d0 and d1 share e1 and e2 either way (same total): the first dataset gets the smaller one
    assert solve_assignment([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5], [0.1, 0.0, 0.0]]) == [1, 2, 0]
    # float noise below the tolerance is a tie, not a preference
    assert solve_assignment([[0.3, 0.1 + 0.2], [0.0, 0.0]]) == [0, 1]


def test_deterministic():
    rng = random.Random(7)
    affinity = [[rng.choice([0.0, 0.25, 0.5]) for _ in range(4)] for _ in range(10)]
    first = solve_assignment(affinity)
    assert all(solve_assignment(affinity) == first for _ in range(3))
    assert solve_assignment([tuple(row) for row in affinity]) == first


def test_hungarian_reports_infeasible_matchings():
    inf = float("inf")
    assert hungarian([[1.0, 2.0], [3.0, 1.0]]) == [0, 1]
    assert hungarian([[inf, 1.0], [inf, 2.0]]) is None


def test_affinity_from_counts_normalises_per_dataset_and_averages_layers():
    counts_DLE = [
        [[6, 2, 0], [2, 2, 4]],  # layer shares (.75 .25 0) and (.25 .25 .5)
        [[0, 0, 10], [0, 5, 5]],
    ]
    affinity = affinity_from_counts(counts_DLE)
    assert affinity[0] == pytest.approx([0.5, 0.25, 0.25])
    assert affinity[1] == pytest.approx([0.0, 0.25, 0.75])
    with pytest.raises(ValueError, match="dataset 1 has no routed token"):
        affinity_from_counts([[[1, 1, 0]], [[0, 0, 0]]])


def test_affinity_from_routing_figures_and_training_stats():
    figures = {
        "datasets": ["a", "b"],
        "experts": 2,
        "layers": [2, 4],
        "counts": {"2": [[3, 1], [0, 4]], "4": [[1, 1], [2, 2]]},
        "training_expert": {"a": 0, "b": None},
        "records": {"a": 1, "b": 1},
    }
    counts = counts_from_figures(figures)
    assert counts == [[[3, 1], [1, 1]], [[0, 4], [2, 2]]]
    a, b = affinity_from_counts(counts)
    assert a == pytest.approx([0.625, 0.375]) and b == pytest.approx([0.25, 0.75])
    # stats [E, S, 2]: slot 0 unlabelled, slot 1 + t task t, column 0 gate, 1 forced (ignored)
    layer = [[[9, 9], [3, 50], [0, 0]], [[9, 9], [1, 0], [4, 70]]]
    assert counts_from_stats({1: layer}, num_tasks=2) == [[[3, 1]], [[0, 4]]]
    doc = affinity_document(["a", "b"], [[0.5, 0.5], [0.0, 1.0]])
    assert doc == {"datasets": ["a", "b"], "experts": 2, "affinity": [[0.5, 0.5], [0.0, 1.0]]}


DATASETS = ["librispeech", "cv", "coedit_gec"]
AFFINITY = [[0.1, 0.2, 0.6, 0.1], [0.1, 0.2, 0.6, 0.1], [0.7, 0.1, 0.1, 0.1]]


def test_learned_resolves_through_task_routing_config(tmp_path):
    path = tmp_path / "affinity.json"
    # rows in another order than the training datasets: matched by name
    order = [2, 0, 1]
    document = affinity_document([DATASETS[i] for i in order], [AFFINITY[i] for i in order])
    path.write_text(json.dumps(document))
    expected = [1, 2, 0]  # librispeech and cv tie on e1 / e2: the first gets the smaller
    for affinity in (str(path), path, document, AFFINITY):
        routing = TaskRoutingConfig(
            assignment=TaskAssignmentConfig(mode="learned", affinity=affinity)
        ).resolve(DATASETS, 4)
        assert routing.task_to_expert == expected
        assert routing.task_names == DATASETS


def test_random_and_explicit_unchanged():
    def names(n):
        return [f"d{i}" for i in range(n)]

    golden = {  # the mappings of the modes before `learned` existed
        (5, 8, 3): [0, 5, 7, 2, 1],
        (19, 8, 0): [4, 1, 5, 2, 0, 3, 7, 6, 1, 0, 4, 5, 3, 2, 7, 6, 5, 4, 3],
        (3, 2, 1234): [0, 1, 1],
        (8, 8, 7): [6, 7, 2, 4, 0, 3, 1, 5],
    }
    for (d, e, seed), experts in golden.items():
        assert assign_tasks_to_experts(names(d), e, TaskAssignmentConfig(seed=seed)) == experts
    explicit = TaskAssignmentConfig(mode="explicit", mapping={"d0": 1, "d1": 1})
    assert assign_tasks_to_experts(names(2), 2, explicit) == [1, 1]


def _doc(**change):
    return {**affinity_document(DATASETS, AFFINITY), **change}


@pytest.mark.parametrize(
    "affinity,message",
    [
        (AFFINITY[:2], r"affinity has 2 rows, expected one per dataset \(3\)"),
        ([row[:3] for row in AFFINITY], r"affinity row 0 has 3 entries, expected one per expert"),
        (_doc(datasets=["librispeech", "cv", "ted"]), r"unknown datasets \['ted'\]"),
        (
            _doc(datasets=DATASETS[:2], affinity=AFFINITY[:2]),
            r"no affinity row for training datasets \['coedit_gec'\]",
        ),
        (_doc(datasets=["cv", "cv", "coedit_gec"]), r"duplicated dataset names \['cv'\]"),
        (_doc(experts=8), r"affinity is for experts=8, the model has 4"),
        ({"datasets": DATASETS}, r"the affinity document has no \['experts', 'affinity'\]"),
        ([AFFINITY[0], [0.1, -0.2, 0.6, 0.1], AFFINITY[2]], r"affinity\[1\]\[1\] is negative"),
        ([AFFINITY[0], AFFINITY[1], [0.1, 0.1, float("nan"), 0.1]], r"affinity\[2\]\[2\] is nan"),
        ([AFFINITY[0], AFFINITY[1], [0.1, "x", 0.1, 0.1]], r"affinity\[2\]\[1\] is not a number"),
        (42, r"expected a file path, a document or a matrix"),
    ],
)
def test_learned_errors_are_one_line(affinity, message):
    cfg = TaskAssignmentConfig(mode="learned", affinity=affinity)
    with pytest.raises(ValueError, match=message) as error:
        assign_tasks_to_experts(DATASETS, 4, cfg)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith("routing.assignment.affinity")


def test_learned_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=r"missing\.json\): cannot read the affinity file"):
        assign_tasks_to_experts(DATASETS, 4, TaskAssignmentConfig(mode="learned", affinity=missing))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json\): cannot read"):
        assign_tasks_to_experts(DATASETS, 4, TaskAssignmentConfig(mode="learned", affinity=broken))
    nan = tmp_path / "nan.json"  # json writes NaN literally and reads it back
    nan.write_text(json.dumps(_doc(affinity=[AFFINITY[0], AFFINITY[1], [float("nan")] * 4])))
    with pytest.raises(ValueError, match=r"nan\.json\): affinity\[2\]\[0\] is nan"):
        assign_tasks_to_experts(DATASETS, 4, TaskAssignmentConfig(mode="learned", affinity=nan))
    with pytest.raises(ValueError, match="mode 'learned' needs affinity"):
        TaskAssignmentConfig(mode="learned")


def test_learned_from_a_run_config_saved_and_reloaded(tmp_path):
    from nemo_neko.config import load_run_config, save_run_config, to_run_config
    from nemo_neko.testing.runs import compose_run

    names = [spec["name"] for spec in compose_run(tmp_path / "probe").data.train]
    experts = 4
    affinity = [  # dataset d prefers expert E - 1 - d (mod E)
        [float(e == (experts - 1 - d) % experts) for e in range(experts)] for d in range(len(names))
    ]
    path = tmp_path / "affinity.json"
    path.write_text(json.dumps(affinity_document(names, affinity)))
    overrides = [
        f"model.num_experts={experts}",
        "model.moe_router_topk=2",
        "routing.assignment.mode=learned",
        f"routing.assignment.affinity={path}",
    ]
    run = to_run_config(compose_run(tmp_path / "run", overrides))
    expected = solve_assignment(affinity)
    assert run.task_routing().task_to_expert == expected
    save_run_config(run, tmp_path / "config.yaml")
    assert load_run_config(tmp_path / "config.yaml").task_routing().task_to_expert == expected
