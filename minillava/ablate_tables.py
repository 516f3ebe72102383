"""The ablation's tables: mean +- std over seeds, whether the toy world moves the paper's way, and the Markdown
table and plot that `minillava ablate` writes (`ablation.{json,md,png}`) from the summary `ablate.summarise` builds.
Notebook 06 formats the committed summary with the same code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def mean_std(values: list[float]) -> dict:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": m, "std": sd, "values": values}


def _pm(ms: dict, digits: int = 1) -> str:
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def direction(ours: dict, base: dict, paper_delta: float) -> str:
    """Whether the toy world shows the paper's direction: the change of the mean has the paper's sign and is larger
    than the seeds' spread (the larger of the two std's); otherwise "not reproduced" or "within noise"."""
    delta = ours["mean"] - base["mean"]
    noise = max(ours["std"], base["std"])
    if abs(delta) <= noise:
        return "within noise"
    return "reproduced" if (delta > 0) == (paper_delta > 0) else "opposite"


def format_tables(table: dict) -> str:
    n = len(table["seeds"])
    lines = [f"# The paper's tables in the toy world (mean ± std over {n} training seeds: {table['seeds']})", ""]
    lines += ["## Instruction data types: toy LLaVA-Bench, relative score (%), rule-based judge", "",
              "| stage-2 data | conversation | detail | complex | overall | paper (overall) | vs full: paper | toy |",
              "|---|---|---|---|---|---|---|---|"]
    data, paper = table["data"], table["paper"]["data"]
    for v, r in data.items():
        mark = "" if v == "full" else direction(r["overall"], data["full"]["overall"], paper[v] - paper["full"])
        pd = "" if v == "full" else f"{paper[v] - paper['full']:+.1f}"
        lines.append(f"| {v} | {_pm(r['conv'])} | {_pm(r['detail'])} | {_pm(r['complex'])} | {_pm(r['overall'])} | "
                     f"{paper[v]} | {pd} | {mark} |")
    lines += ["", "## ScienceQA design choices: toy ScienceQA accuracy (%)", "",
              "| variant | accuracy | paper | vs best: paper | toy |", "|---|---|---|---|---|"]
    sqa, paper = table["scienceqa"], table["paper"]["scienceqa"]
    best = "reasoning first (best)"
    for v, r in sqa.items():
        mark = "" if v == best else direction(r["accuracy"], sqa[best]["accuracy"], paper[v] - paper[best])
        pd = "" if v == best else f"{paper[v] - paper[best]:+.2f}"
        lines.append(f"| {v} | {_pm(r['accuracy'])} | {paper[v]} | {pd} | {mark} |")
    chance = table.get("scienceqa_chance")
    if chance:
        lines.append(f"| chance (a random choice) | {chance['accuracy']:.1f} | | | |")
    lines += ["", "Accuracy by question category (reasoning first):", "",
              "| category | accuracy | chance |", "|---|---|---|"]
    for c, ms in sqa[best]["per_category"].items():
        lines.append(f"| {c} | {_pm(ms)} | {chance['per_category'][c]:.1f} |" if chance else f"| {c} | {_pm(ms)} | |")
    lines += ["", "## POPE (the full model)", "", "| negatives | accuracy | precision | recall | F1 | yes-ratio |",
              "|---|---|---|---|---|---|"]
    for setting, r in table["pope"].items():
        lines.append(f"| {setting} | " + " | ".join(_pm(r[m], 3) for m in ("accuracy", "precision", "recall", "f1",
                                                                            "yes_ratio")) + " |")
    lines += ["", "## The toy runs (exact match on held-out short answers)", "", "| kind | image (stage 1 + 2) | "
              "text only (stage-0 LLM, scene described in words) |", "|---|---|---|"]
    for k, ms in table["toy_exact_match"].items():
        t = table["toy_text_only"].get(k)
        lines.append(f"| {k} | {_pm(ms, 3)} | {'-' if t is None else _pm(t, 3)} |")
    lines += ["", "\"toy\" marks whether the toy world moves the paper's way: \"reproduced\" (same sign, change larger "
              "than the seeds' std), \"opposite\", or \"within noise\".", ""]
    if "seconds" in table:
        note = f" ({table['seconds_note']})" if table.get("seconds_note") else ""
        lines += [f"Wall time: {table['seconds']:.0f} s{note}.", ""]
    return "\n".join(lines)


def write_tables(root: Path, table: dict) -> None:
    from matplotlib.figure import Figure

    (root / "ablation.json").write_text(json.dumps(table, indent=1) + "\n")
    (root / "ablation.md").write_text(format_tables(table))
    fig = Figure(figsize=(10, 3.4))
    ax1, ax2 = fig.subplots(1, 2)
    for ax, (section, key) in ((ax1, ("data", "overall")), (ax2, ("scienceqa", "accuracy"))):
        names = list(table[section])
        ours = [table[section][v][key]["mean"] for v in names]
        err = [table[section][v][key]["std"] for v in names]
        paper = [table["paper"][section][v] for v in names]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], paper, 0.4, label="paper", color="#bbbbbb")
        ax.bar([i + 0.2 for i in x], ours, 0.4, yerr=err, label="toy (mean ± std)", color="#3b6ea8")
        ax.set_xticks(list(x), [n.replace(" (best)", "") for n in names], rotation=20, fontsize=8)
        ax.set_title("LLaVA-Bench relative score (%)" if section == "data" else "ScienceQA accuracy (%)", fontsize=9)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(root / "ablation.png", dpi=100)
