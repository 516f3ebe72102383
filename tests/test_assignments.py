"""The classroom assignments (notebooks/assignments/, one per Algorithm 1-4), graded by nbgrader as an instructor would.

A course folder is built in a temporary directory from the committed sources; `nbgrader generate_assignment` makes
the student versions (which must equal the committed release/), fake students submit the solutions, the blank
student versions and the solutions with one typical mistake each, `nbgrader autograde` runs them all, and the
scores are read back from the gradebook with nbgrader's `Gradebook` API. Needs the `classroom` extra
(`pip install -e ".[classroom]"`); about two minutes on 2 CPU cores, most of it importing torch in 14 kernels.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from minillava.formal import algorithms

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "notebooks" / "assignments"
COURSE_ID = "minillava"
ASSIGNMENTS = ["a1_visual_tokens", "a2_forward_pass", "a3_training", "a4_inference"]
ALGORITHM_OF = dict(zip(ASSIGNMENTS, (1, 2, 3, 4)))


@dataclass(frozen=True)
class Mistake:
    student: str  # the fake student who submits it
    assignment: str
    cell: str  # the solution cell (grade_id) it is made in
    old: str  # text of the solution
    new: str  # what the student wrote instead
    fails: str  # the one test cell (grade_id) that must lose its points
    message: str  # words of that cell's feedback, distinct for each mistake


# the typical mistakes, each written into the solution as a student would make it
MISTAKES = [
    Mistake("wrong_layer", "a1_visual_tokens", "select_features", "hidden_states[feature_layer]", "hidden_states[-1]",
            "alg1_line1_layer", "Algorithm 1, line 1 (wrong layer)"),
    Mistake("cls_left_in", "a1_visual_tokens", "select_features", "return z[:, 1:]", "return z",
            "alg1_line2_no_cls", "Algorithm 1, line 2 (CLS token left in)"),
    Mistake("wrong_shape", "a1_visual_tokens", "project", "return z_v @ weight.T + bias",
            "return (z_v @ weight.T + bias).mean(1)", "alg1_line3_project", "Algorithm 1, line 3 (wrong shape)"),
    Mistake("mask_off_by_one", "a2_forward_pass", "label_mask", "keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX",
            "keep = labels != IGNORE_INDEX", "alg2_line10_mask", "Algorithm 2, line 10 (off by one)"),
    Mistake("no_warmup", "a3_training", "lr_at",
            "    if j < warmup:\n        return peak_lr * (j + 1) / warmup  # linear warmup: eta_k / J_warm, "
            "2 eta_k / J_warm, ..., eta_k\n", "", "alg3_line4_schedule", "(never warms up)"),
    Mistake("cache_not_used", "a4_inference", "generate",
            'logits = model(next_ids[:, None], attention_mask=mask, cache=cache)["logits"][:, -1]',
            'input_ids = torch.cat([input_ids, next_ids[:, None]], dim=1)\n'
            '            logits = model(input_ids, pixel_values, mask)["logits"][:, -1]',
            "alg4_line8_cache", "Algorithm 4, line 8 (cache not used)"),
]


def notebook_path(folder: Path, assignment: str) -> Path:
    return folder / assignment / f"{assignment}.ipynb"


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def nbgrader_meta(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


# ---------------------------------------------------------------------------------------------------------------------
# the sources, without running anything


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_sources_use_nbgrader_markup(assignment):
    nb = read(notebook_path(COURSE / "source", assignment))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = [c for c in nb["cells"] if nbgrader_meta(c)]
    ids = [nbgrader_meta(c)["grade_id"] for c in cells]
    assert len(ids) == len(set(ids)), f"{assignment}: grade_ids repeat: {ids}"
    solutions = [c for c in cells if nbgrader_meta(c)["solution"]]
    tests = [c for c in cells if nbgrader_meta(c)["grade"]]
    assert solutions and tests
    lines = algorithms()[ALGORITHM_OF[assignment]].lines
    hidden = 0
    for cell in cells:
        meta = nbgrader_meta(cell)
        assert meta["schema_version"] == 3 and set(meta) >= {"grade", "grade_id", "locked", "solution", "task"}
        assert cell["cell_type"] == "code" and not cell["outputs"], f"{meta['grade_id']}: outputs are saved"
    for cell in solutions:
        text = source(cell)
        assert text.count("### BEGIN SOLUTION") == 1 and text.count("### END SOLUTION") == 1, cell["source"]
        assert not nbgrader_meta(cell)["locked"]
    for cell in tests:
        meta, text = nbgrader_meta(cell), source(cell)
        assert meta["locked"] and not meta["solution"] and meta["points"] > 0
        hidden += "### BEGIN HIDDEN TESTS" in text
        # every test names the algorithm lines it checks, and those lines exist
        cited = re.findall(rf"Algorithm {ALGORITHM_OF[assignment]}, lines? (\d+)(?:-(\d+))?", text)
        assert cited, f"{meta['grade_id']}: no 'Algorithm N, line L' in its messages"
        for first, last in cited:
            for line in range(int(first), int(last or first) + 1):
                assert line in lines, f"{meta['grade_id']} cites line {line}, which Algorithm has not"
    assert hidden, f"{assignment}: no hidden tests"


def test_each_mistake_is_in_its_solution_cell():
    for m in MISTAKES:
        nb = read(notebook_path(COURSE / "source", m.assignment))
        cells = {nbgrader_meta(c).get("grade_id"): c for c in nb["cells"]}
        assert source(cells[m.cell]).count(m.old) == 1, f"{m.student}: {m.old!r} is not in {m.cell}"
        assert nbgrader_meta(cells[m.fails])["grade"]
    assert len({m.message for m in MISTAKES}) == len(MISTAKES)


def test_classroom_extra_holds_nbgrader():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(req.startswith("nbgrader") for req in project["optional-dependencies"]["classroom"])
    assert not any("nbgrader" in req for req in project["dependencies"])  # an extra, never a core dependency


def test_nbval_does_not_collect_the_assignments():
    """pyproject's --nbval-lax would run every notebook under notebooks/; notebooks/assignments/conftest.py keeps
    it away from the assignments on purpose (the student versions fail by design; the solutions run here)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "notebooks"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "01_visual_tokens.ipynb" in out.stdout  # the course notebooks are still collected
    assert "assignments" not in out.stdout


# ---------------------------------------------------------------------------------------------------------------------
# generated and autograded with nbgrader


@dataclass
class Graded:
    root: Path  # the course folder
    scores: dict[tuple[str, str], dict[str, float]]  # (student, assignment) -> grade_id -> score
    max_scores: dict[str, dict[str, float]]  # assignment -> grade_id -> points


def nbgrader(root: Path, *args: str, timeout: int = 900) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               JUPYTER_CONFIG_DIR=str(root.parent / "jupyter-config"),  # no instructor's personal config
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))  # kernel python
    out = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"


def submission(release: dict, solutions: dict[str, str] | None, mistake: Mistake | None = None) -> dict:
    """The student version with its solution cells filled in (solutions=None: left blank)."""
    nb = copy.deepcopy(release)
    for cell in nb["cells"]:
        meta = nbgrader_meta(cell)
        if not meta.get("solution") or solutions is None:
            continue
        text = solutions[meta["grade_id"]]
        if mistake is not None and mistake.cell == meta["grade_id"]:
            text = text.replace(mistake.old, mistake.new)
        cell["source"] = text
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Graded:
    pytest.importorskip("nbgrader", reason='the classroom extra: pip install -e ".[classroom]"')
    from nbgrader.api import Gradebook

    root = tmp_path_factory.mktemp("classroom") / "course"
    root.mkdir()
    shutil.copy(COURSE / "nbgrader_config.py", root)
    shutil.copytree(COURSE / "source", root / "source")
    nbgrader(root, "generate_assignment", "*", "--force")

    students: dict[str, list[str]] = {a: ["solution", "blank"] for a in ASSIGNMENTS}
    for a in ASSIGNMENTS:
        release = read(notebook_path(root / "release", a))
        solutions = {nbgrader_meta(c)["grade_id"]: source(c)
                     for c in read(notebook_path(root / "source", a))["cells"] if nbgrader_meta(c).get("solution")}
        subs = {"solution": submission(release, solutions), "blank": submission(release, None)}
        for m in MISTAKES:
            if m.assignment == a:
                subs[m.student] = submission(release, solutions, m)
                students[a].append(m.student)
        for student, nb in subs.items():
            path = notebook_path(root / "submitted" / student, a)
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(nb))
    nbgrader(root, "autograde", "*")

    scores, max_scores = {}, {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", course_id=COURSE_ID) as gb:
        for a in ASSIGNMENTS:
            for student in students[a]:
                nb = gb.find_submission_notebook(a, a, student)
                scores[student, a] = {g.name: g.score for g in nb.grades}
                max_scores[a] = {g.name: g.max_score for g in nb.grades}
    return Graded(root, scores, max_scores)


def autograded_cells(graded: Graded, student: str, assignment: str) -> list[dict]:
    return read(notebook_path(graded.root / "autograded" / student, assignment))["cells"]


def failures(cell: dict) -> list[str]:
    """The error messages (and stderr) a cell printed; nbgrader gives a test cell with any of them zero points."""
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "error":
            out.append(f"{o['ename']}: {o['evalue']}")
        elif o["output_type"] == "stream" and o["name"] == "stderr":
            out.append("stderr: " + "".join(o["text"]))
    return out


@pytest.mark.slow
def test_release_is_generated_from_the_sources(graded):
    """The committed student versions are what `nbgrader generate_assignment` makes of the committed sources."""
    for a in ASSIGNMENTS:
        fresh = read(notebook_path(graded.root / "release", a))
        committed = notebook_path(COURSE / "release", a)
        assert committed.exists() and read(committed) == fresh, (
            f"{committed.relative_to(ROOT)} is not the student version of its source: regenerate it with "
            "`cd notebooks/assignments && nbgrader generate_assignment '*' --force`")
        text = committed.read_text()
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "raise NotImplementedError()" in text


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solutions_get_full_marks(graded, assignment):
    scores, full = graded.scores["solution", assignment], graded.max_scores[assignment]
    assert scores == full, f"{assignment}: the solutions lost points: {scores} of {full}"
    for cell in autograded_cells(graded, "solution", assignment):
        assert not failures(cell), f"{assignment}: {failures(cell)} in\n{source(cell)[:300]}"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_versions_get_zero_and_fail_only_in_test_cells(graded, assignment):
    scores = graded.scores["blank", assignment]
    assert set(scores.values()) == {0.0}, f"{assignment}: blank student version scored {scores}"
    n = ALGORITHM_OF[assignment]
    for cell in autograded_cells(graded, "blank", assignment):
        errors, meta = failures(cell), nbgrader_meta(cell)
        if meta.get("grade"):
            # the notebook ran to the end: every test ran and says which function to write
            assert len(errors) == 1 and errors[0].startswith(f"NotImplementedError: Algorithm {n}"), errors
            assert "is not written yet" in errors[0], errors
        else:  # setup, the students' own cells and the demos run without a solution
            assert not errors, f"{assignment}: a cell that is not a test failed: {errors}\n{source(cell)[:300]}"


@pytest.mark.slow
@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.student for m in MISTAKES])
def test_each_typical_mistake_loses_exactly_its_part(graded, mistake):
    scores, full = graded.scores[mistake.student, mistake.assignment], graded.max_scores[mistake.assignment]
    expected = dict(full, **{mistake.fails: 0.0})
    assert scores == expected, f"{mistake.student}: scores {scores}, expected {expected}"
    for cell in autograded_cells(graded, mistake.student, mistake.assignment):
        errors = failures(cell)
        if nbgrader_meta(cell).get("grade_id") == mistake.fails:
            assert len(errors) == 1 and mistake.message in errors[0], errors
            assert errors[0].startswith("AssertionError: Algorithm "), errors
        else:
            assert not errors, f"{mistake.student}: {errors}\n{source(cell)[:300]}"


@pytest.mark.slow
def test_feedback_shows_the_student_the_line_and_the_points(graded):
    """`nbgrader generate_feedback` (what the student gets back) carries the message and the part's points."""
    mistake = MISTAKES[0]
    nbgrader(graded.root, "generate_feedback", mistake.assignment, f"--student={mistake.student}")
    html = notebook_path(graded.root / "feedback" / mistake.student, mistake.assignment).with_suffix(".html")
    text = html.read_text()
    points = graded.max_scores[mistake.assignment]
    total, lost = sum(points.values()), points[mistake.fails]
    assert mistake.message in text and f"Score: {total - lost:.1f} / {total:.1f}" in text
