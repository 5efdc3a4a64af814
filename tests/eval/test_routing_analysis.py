"""Routing analysis against hand-counted routing: share on the training expert, specialisation
(share over chance, NMI), zero-shot sets, the tables, and ``python -m nemo_neko.eval routing``."""

import json
import math

import pytest

from nemo_neko.eval.routing_analysis import (
    MEAN,
    analyse_routing,
    analysis_markdown,
    analysis_text,
    load_analysis,
    normalised_mutual_information,
)
from nemo_neko.inference.routing import routing_figures

# E = 4 experts, top-2, MoE layers 1 and 3; e1 carries two training sets, e2 none
TRAINING = {"ls": 0, "cv": 1, "gec": 1, "ocr": 3}
# held-out: ls (10 prompt tokens: rows sum to 20), cv (5 tokens), ted (4 tokens, zero-shot)
SUMMARY = {
    "datasets": ["ls", "cv", "ted"],
    "experts": 4,
    "layers": [1, 3],
    "counts": {
        "1": [[10, 4, 4, 2], [1, 4, 3, 2], [2, 2, 4, 0]],
        "3": [[5, 5, 5, 5], [0, 5, 5, 0], [0, 4, 0, 4]],
    },
    "training_expert": {"ls": 0, "cv": 1, "ted": None},
    "records": {"ls": 2, "cv": 1, "ted": 1},
}


def h(*p):
    return -sum(x * math.log(x) for x in p)


def test_the_summary_is_in_the_correct_stages_format():
    lines = [  # per record (dataset, [L][E]), as correct stores them in the predictions
        ("ls", [[6, 2, 2, 2], [3, 3, 3, 3]]),
        ("cv", [[1, 4, 3, 2], [0, 5, 5, 0]]),
        ("ls", [[4, 2, 2, 0], [2, 2, 2, 2]]),
        ("ted", [[2, 2, 4, 0], [0, 4, 0, 4]]),
    ]
    assert routing_figures(lines, ["ls", "cv", "ted"], [1, 3], 4, TRAINING) == SUMMARY


def test_share_on_the_training_expert_per_layer():
    analysis = analyse_routing(SUMMARY, TRAINING, top_k=2)
    assert analysis.seen == ["ls", "cv"] and analysis.zero_shot == ["ted"]
    assert analysis.chance == 0.5
    # ls: L1 every token has e0 in its top-2 (2 * 10 / 20), L3 chance (2 * 5 / 20)
    assert analysis.on_expert["ls"] == pytest.approx({"1": 1.0, "3": 0.5, MEAN: 0.75})
    assert analysis.on_expert["cv"] == pytest.approx({"1": 0.8, "3": 1.0, MEAN: 0.9})


def test_specialisation_scores():
    spec = analyse_routing(SUMMARY, TRAINING, top_k=2).specialisation
    assert spec["1"]["share_over_chance"] == pytest.approx((0.5 + 0.3) / 2)
    assert spec["3"]["share_over_chance"] == pytest.approx((0.0 + 0.5) / 2)
    assert spec[MEAN]["share_over_chance"] == pytest.approx(0.325)
    # L3: p(D) = (2/3, 1/3), p(E) = (1/6, 1/3, 1/3, 1/6), I = log(1.6875) / 3 (by hand)
    expected = (math.log(1.6875) / 3) / ((h(2 / 3, 1 / 3) + h(1 / 6, 1 / 3, 1 / 3, 1 / 6)) / 2)
    assert spec["3"]["nmi"] == pytest.approx(expected)
    assert spec["1"]["nmi"] == pytest.approx(
        normalised_mutual_information([[10, 4, 4, 2], [1, 4, 3, 2]])
    )
    assert spec[MEAN]["nmi"] == pytest.approx((spec["1"]["nmi"] + spec["3"]["nmi"]) / 2)


def test_normalised_mutual_information_by_hand():
    assert normalised_mutual_information([[2, 0], [0, 2]]) == pytest.approx(1.0)
    assert normalised_mutual_information([[1, 1], [2, 2]]) == pytest.approx(0.0)
    # p = 1/3 each on (0,0), (1,0), (1,1): I = log(1.6875) / 3, H(D) = H(E) = H(1/3, 2/3)
    expected = (math.log(1.6875) / 3) / h(1 / 3, 2 / 3)
    assert normalised_mutual_information([[1, 0], [1, 1]]) == pytest.approx(expected)
    assert normalised_mutual_information([[3, 1], [0, 0]]) is None  # one set with tokens
    assert normalised_mutual_information([[3, 0], [1, 0]]) == 0.0  # one expert


def test_zero_shot_sets_fall_on_training_experts():
    analysis = analyse_routing(SUMMARY, TRAINING, top_k=2)
    shares = analysis.zero_shot_shares["ted"]
    assert shares["1"] == pytest.approx([0.25, 0.25, 0.5, 0.0])
    assert shares["3"] == pytest.approx([0.0, 0.5, 0.0, 0.5])
    assert shares[MEAN] == pytest.approx([0.125, 0.375, 0.25, 0.25])
    assert analysis.on_tied_experts["ted"] == pytest.approx(0.75)  # e0 + e1 + e3
    assert analysis.tied_chance == 0.75
    assert analysis.datasets_of(1) == ["cv", "gec"] and analysis.datasets_of(2) == []


def test_tables_text_markdown_and_json():
    analysis = analyse_routing(SUMMARY, TRAINING, top_k=2)
    text = analysis_text(analysis)
    assert "chance 50.0 % (top_k / E = 2 / 4)" in text
    lines = text.splitlines()
    assert [line.split() for line in lines if line.startswith("ls ")] == [
        ["ls", "0", "100.0", "50.0", "75.0"]
    ]
    assert [line.split() for line in lines if line.startswith("all ")] == [
        ["all", "+32.5", f"{analysis.specialisation[MEAN]['nmi']:.3f}"]
    ]
    ted = [line.split() for line in lines if line.startswith("ted ")]
    assert ted == [["ted", "12.5", "37.5", "25.0", "25.0", "75.0", "e1", "(cv,", "gec)"]]
    assert "training sets per expert: e0: ls; e1: cv, gec; e2: -; e3: ocr" in text
    markdown = analysis_markdown(analysis)
    assert markdown.startswith("## Routing specialisation at inference")
    assert "| ted | 12.5 | 37.5 | 25.0 | 25.0 | 75.0 | e1 (cv, gec) |" in markdown
    figures = json.loads(json.dumps(analysis.to_dict()))
    assert figures["chance"] == 0.5 and figures["on_expert"]["cv"][MEAN] == pytest.approx(0.9)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="written for another assignment: 'cv' -> expert 1"):
        analyse_routing(SUMMARY, {**TRAINING, "cv": 2}, top_k=2)
    with pytest.raises(ValueError, match=r"top_k=5 must be in \[1, experts=4\]"):
        analyse_routing(SUMMARY, TRAINING, top_k=5)
    broken = {**SUMMARY, "counts": {"1": [[1, 2]], "3": []}}
    with pytest.raises(ValueError, match="x.json: not a routing summary of the correct stage"):
        analyse_routing(broken, TRAINING, top_k=2, where="x.json")
    with pytest.raises(ValueError, match="cannot read the routing summary"):
        load_analysis(tmp_path / "none.json", TRAINING, 2)


def test_sets_without_tokens_and_without_seen_sets():
    summary = {**SUMMARY, "counts": {k: [[0] * 4, *v[1:]] for k, v in SUMMARY["counts"].items()}}
    analysis = analyse_routing(summary, TRAINING, top_k=2)
    assert analysis.on_expert["ls"] == {"1": None, "3": None, MEAN: None}
    assert analysis.specialisation["3"]["nmi"] is None  # only cv has tokens
    assert analysis.specialisation["3"]["share_over_chance"] == pytest.approx(0.5)
    unseen = {**SUMMARY, "training_expert": {name: None for name in SUMMARY["datasets"]}}
    zero_shot_only = analyse_routing(unseen, {"other": 2}, top_k=2)
    assert zero_shot_only.seen == [] and zero_shot_only.zero_shot == ["ls", "cv", "ted"]
    assert zero_shot_only.specialisation[MEAN] == {"share_over_chance": None, "nmi": None}
    assert "training sets per expert: e0: -; e1: -; e2: other; e3: -" in analysis_text(
        zero_shot_only
    )


def test_cli_reads_the_runs_config_and_routing_summary(tmp_path, capsys):
    from nemo_neko.config import save_run_config, to_run_config
    from nemo_neko.eval.__main__ import main
    from nemo_neko.inference.routing import write_routing
    from nemo_neko.paths import RunPaths
    from nemo_neko.testing.runs import compose_run

    run_dir = tmp_path / "run"
    run = to_run_config(compose_run(run_dir, ["model.num_experts=4", "model.moe_router_topk=2"]))
    paths = RunPaths(run_dir)
    save_run_config(run, paths.config)
    assignment = run.task_routing()
    training = dict(zip(assignment.task_names, assignment.task_to_expert))
    seen = assignment.task_names[0]
    expert = training[seen]
    row = [0] * 4
    row[expert] = 6  # every token of the seen set has its expert in its top-2
    row[(expert + 1) % 4] = 6
    figures = routing_figures(
        [(seen, [row]), ("zs", [[1, 1, 1, 1]])], [seen, "zs"], [1], 4, training
    )
    write_routing(paths.routing, figures)
    out = tmp_path / "a.json"
    assert (
        main(["routing", str(run_dir), "--json", str(out), "--markdown", str(tmp_path / "a.md")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "routing specialisation at inference" in printed
    analysis = json.loads(out.read_text())
    assert analysis["on_expert"][seen][MEAN] == 1.0 and analysis["zero_shot"] == ["zs"]
    assert (tmp_path / "a.md").read_text().startswith("## Routing specialisation")
    assert main(["routing", str(tmp_path / "nothing")]) == 2
