"""The experiment's comparison: every arm's scores per held-out set, beside the first pass and the
oracles, and how each MoE arm routes (``comparison.{json,md,png}``, ``comparison.routing.png``).

Per held-out set (and language, for translation; in-domain: trained on, zero-shot: not, e.g.
``experiment.held_out``): the 1-best, the N-best oracle, the compositional oracle (each arm's
``report.json``; they must agree: the same records) and each arm's corrected score; then per
metric the mean over the in-domain sets, over the zero-shot sets and over all. Per MoE arm: the routing analysis of its inference routing
(:mod:`nemo_neko.eval.routing_analysis`: share on the training expert, specialisation, where
zero-shot sets fall) and the dataset x expert shares at training (``metrics.jsonl``: forced and
gate choices, all MoE layers) and at inference (``predictions.routing.json``, all MoE layers).
Arms whose scored run has no report yet are listed as missing, never dropped silently.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nemo_neko.eval.render import markdown_table
from nemo_neko.experiment.arms import DONE_FILE, SubRun
from nemo_neko.experiment.config import ArmKind, ExperimentConfig
from nemo_neko.utils.files import write_json_atomic, write_text_atomic

ORACLES = (("baseline", "1-best"), ("nbest_oracle", "N-best oracle"),
           ("compositional_oracle", "comp. oracle"))  # fmt: skip


def _scored(subs: list[SubRun]) -> SubRun:
    return next(s for s in subs if s.role == "run")


def _seconds(subs: list[SubRun]) -> float | None:
    total = 0.0
    for sub in subs:
        path = sub.run_dir / DONE_FILE
        if not path.exists():
            return None
        total += json.loads(path.read_text())["seconds"]
    return total


def training_shares(run_dir: Path) -> dict | None:
    """``{datasets, shares [D][E]}``: each training dataset's routed pairs per expert over the
    run's logged steps (``routing/<dataset>/expert<e>`` of ``metrics.jsonl``), None without."""
    from nemo_neko.experiment.steps import training_routing_counts

    if not (run_dir / "metrics.jsonl").exists():
        return None
    names, counts, _ = training_routing_counts(run_dir)
    return {"datasets": names, "shares": [_normalised(row) for row in counts]}


def inference_shares(run_dir: Path) -> dict | None:
    """``{datasets, shares [D][E]}`` of the run's inference routing, all MoE layers summed."""
    path = run_dir / "predictions.routing.json"
    if not path.exists():
        return None
    figures = json.loads(path.read_text())
    rows = [[0.0] * int(figures["experts"]) for _ in figures["datasets"]]
    for table in figures["counts"].values():
        for d, row in enumerate(table):
            rows[d] = [a + b for a, b in zip(rows[d], row)]
    return {"datasets": list(figures["datasets"]), "shares": [_normalised(r) for r in rows]}


def _normalised(row: list[float]) -> list[float] | None:
    total = sum(row)
    return [v / total for v in row] if total else None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _label(row: dict) -> str:
    """A report row's name: its dataset, with its language when it has one (translation)."""
    return row["dataset"] + (f" ({row['language']})" if row.get("language") else "")


def _forced(subs: list[SubRun]) -> bool:
    """Whether the arm's scored run trained with task forcing (its assignment was enforced)."""
    config = _scored(subs).config
    return bool(config["model"].get("num_experts")) and config["routing"].get("forcing", True)


def collect(root: Path, plans, experiment: ExperimentConfig) -> dict:
    """The comparison document (module docstring)."""
    from nemo_neko.eval.routing_analysis import analyse_run

    trained = {s["name"] for s in _scored(plans[0][1]).config["data"]["train"]} if plans else set()
    arms, reference = [], None
    for arm, subs in plans:
        scored = _scored(subs)
        report_path = scored.run_dir / "report.json"
        entry = {"name": arm.name, "kind": str(arm.kind), "run_dir": str(scored.run_dir),
                 "seconds": _seconds(subs), "sub_runs": [s.role for s in subs],
                 "forced": _forced(subs)}  # fmt: skip
        if not report_path.exists():
            entry["missing"] = f"{report_path} (the arm has not finished)"
            arms.append(entry)
            continue
        rows = json.loads(report_path.read_text())["rows"]
        entry["scores"] = {_label(r): r["corrected"] for r in rows}
        if reference is None:
            reference = rows
        elif {_label(r): r["baseline"] for r in rows} != {
            _label(r): r["baseline"] for r in reference
        }:
            entry["warning"] = "its held-out records differ from the first arm's (1-best)"
        if arm.kind is not ArmKind.dense:
            try:
                entry["routing"] = analyse_run(scored.run_dir).to_dict()
            except (ValueError, FileNotFoundError) as err:
                entry["routing_missing"] = str(err)
            entry["training_shares"] = training_shares(scored.run_dir)
            entry["inference_shares"] = inference_shares(scored.run_dir)
        arms.append(entry)
    scored_arms = [a for a in arms if "scores" in a]
    datasets = []
    for r in reference or []:
        split = "in-domain" if r["dataset"] in trained else "zero-shot"
        row = {"dataset": _label(r), "metric": r["metric"], "split": split}
        row.update({key: r.get(key) for key, _ in ORACLES})
        row["arms"] = {a["name"]: a["scores"].get(_label(r)) for a in scored_arms}
        datasets.append(row)
    means = []
    for metric in dict.fromkeys(d["metric"] for d in datasets):
        of_metric = [d for d in datasets if d["metric"] == metric]
        splits = list(dict.fromkeys(d["split"] for d in of_metric))
        for split in [*splits, *(["all"] if len(splits) > 1 else [])]:
            chosen = [d for d in of_metric if split in ("all", d["split"])]
            row = {"dataset": f"mean {split} ({len(chosen)})", "metric": metric, "split": split}
            row.update({key: _mean([d[key] for d in chosen]) for key, _ in ORACLES})
            row["arms"] = {a["name"]: _mean([d["arms"].get(a["name"]) for d in chosen])
                           for a in scored_arms}  # fmt: skip
            means.append(row)
    return {"experiment": experiment.name, "held_out": list(experiment.held_out),
            "trained": sorted(trained), "arms": arms, "datasets": datasets,
            "means": means}  # fmt: skip


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _best(values: list[float | None], metric: str) -> float | None:
    from nemo_neko.eval.metrics import get_metric

    present = [v for v in values if v is not None]
    if not present:
        return None
    return max(present) if get_metric(metric).higher_is_better else min(present)


def comparison_markdown(doc: dict) -> str:
    """The comparison as markdown: the score table, the arms' routing, the missing arms."""
    names = [a["name"] for a in doc["arms"] if "scores" in a]
    headers = ["set", "metric", "split", *(label for _, label in ORACLES), *names]
    rows = []
    for row in [*doc["datasets"], *doc["means"]]:
        values = [row["arms"].get(n) for n in names]
        best = _best(values, row["metric"])
        cells = [f"**{_fmt(v)}**" if v is not None and v == best else _fmt(v) for v in values]
        label = row["dataset"] if row in doc["datasets"] else f"*{row['dataset']}*"
        rows.append([label, row["metric"].upper(), row["split"],
                     *(_fmt(row[k]) for k, _ in ORACLES), *cells])  # fmt: skip
    parts = [f"# Experiment {doc['experiment']}", "",
             "Scores in % (WER: lower is better, BLEU: higher; bold: the best arm per row). "
             "Zero-shot: sets no arm trained on (" + (", ".join(doc["held_out"]) or "none held out")
             + ").", "", markdown_table(headers, rows), ""]  # fmt: skip
    arm_rows = []
    for a in doc["arms"]:
        routing = a.get("routing") or {}
        spec = (routing.get("specialisation") or {}).get("mean") or {}
        over, nmi = spec.get("share_over_chance"), spec.get("nmi")
        if not a["forced"]:
            over = None  # its assignment was never enforced: nothing to be on
        arm_rows.append([
            a["name"], a["kind"], "-" if a["seconds"] is None else f"{a['seconds'] / 60:.1f}",
            "-" if over is None else f"{100 * over:+.1f}", "-" if nmi is None else f"{nmi:.3f}",
            a.get("missing") or a.get("warning") or a.get("routing_missing") or "",
        ])  # fmt: skip
    parts += ["## Arms", "", markdown_table(
        ["arm", "kind", "minutes", "on training expert - chance (pts)", "NMI", "note"], arm_rows),
        "", "Routing columns: inference routing (no task ids), mean over the MoE layers. On "
        "training expert: the share of a trained set's prompt tokens whose top-k holds the "
        "expert it was forced to in training, minus chance (top-k / E); only for arms that "
        "forced. NMI: between set and expert (0: the expert says nothing about the set). "
        "`python -m nemo_neko.eval routing <arm dir>` prints the per-layer tables.", ""]  # fmt: skip
    for a in doc["arms"]:
        if a["forced"] and a.get("routing") and a["routing"].get("zero_shot"):
            r = a["routing"]
            falls = [f"{name} -> {100 * (r['on_tied_experts'][name] or 0):.1f} % on experts "
                     f"tied to trained sets" for name in r["zero_shot"]]  # fmt: skip
            parts.append(f"- {a['name']}: zero-shot " + "; ".join(falls)
                         + f" (chance {100 * r['tied_chance']:.1f} %)")  # fmt: skip
    return "\n".join(parts).rstrip() + "\n"


def write_charts(doc: dict, root: Path) -> list[Path]:
    """``comparison.png`` (grouped bars per set) and ``comparison.routing.png`` (dataset x expert
    shares at training and at inference per MoE arm); [] without matplotlib."""
    from nemo_neko.eval.metrics import get_metric

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return []
    written = []
    names = [a["name"] for a in doc["arms"] if "scores" in a]
    metrics = list(dict.fromkeys(r["metric"] for r in doc["datasets"]))
    if doc["datasets"] and names:
        series = [(k, label) for k, label in ORACLES[:2]] + [(n, n) for n in names]
        rows_of = {m: [r for r in [*doc["datasets"], *doc["means"]] if r["metric"] == m]
                   for m in metrics}  # fmt: skip
        widest = max(len(rows) for rows in rows_of.values())
        fig = Figure(figsize=(max(7.0, 1.2 * widest + 2), 4.2 * len(metrics)),
                     layout="constrained")  # fmt: skip
        FigureCanvasAgg(fig)
        width = 0.85 / len(series)
        for ax, metric in zip(fig.subplots(len(metrics), 1, squeeze=False)[:, 0], metrics):
            rows = rows_of[metric]
            for k, (key, label) in enumerate(series):
                values = [(r["arms"].get(key) if key in names else r[key]) for r in rows]
                xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(rows))]
                ax.bar(xs, [math.nan if v is None else v for v in values], width, label=label)
            ax.set_xticks(range(len(rows)), [f"{r['dataset']}\n{r['split']}" for r in rows],
                          fontsize=7)  # fmt: skip
            better = "higher" if get_metric(metric).higher_is_better else "lower"
            ax.set_ylabel(f"{metric.upper()} % ({better} is better)")
            ax.legend(fontsize=7, ncol=2)
        fig.savefig(root / "comparison.png", format="png", dpi=110)
        written.append(root / "comparison.png")
    maps = [(a["name"], when, a[f"{when}_shares"]) for a in doc["arms"]
            for when in ("training", "inference") if a.get(f"{when}_shares")]  # fmt: skip
    if maps:
        fig = Figure(figsize=(4.2 * min(4, len(maps)), 3.4 * ((len(maps) + 3) // 4)),
                     layout="constrained")  # fmt: skip
        FigureCanvasAgg(fig)
        axes = fig.subplots((len(maps) + 3) // 4, min(4, len(maps)), squeeze=False).ravel()
        for ax, (name, when, figures) in zip(axes, maps):
            width = max((len(r) for r in figures["shares"] if r), default=1)
            shares = [row or [math.nan] * width for row in figures["shares"]]
            ax.imshow(shares, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_yticks(range(len(figures["datasets"])), figures["datasets"], fontsize=7)
            ax.set_xlabel("expert", fontsize=7)
            ax.set_title(f"{name}: {when}", fontsize=8)
        for ax in axes[len(maps) :]:
            ax.set_axis_off()
        fig.savefig(root / "comparison.routing.png", format="png", dpi=110)
        written.append(root / "comparison.routing.png")
    return written


def write_comparison(root: Path, plans, experiment: ExperimentConfig) -> Path:
    """Write ``comparison.{json,md}`` and the charts into ``root``; returns the markdown's path."""
    doc = collect(root, plans, experiment)
    write_json_atomic(root / "comparison.json", doc)
    out = write_text_atomic(root / "comparison.md", comparison_markdown(doc))
    write_charts(doc, root)
    return out
