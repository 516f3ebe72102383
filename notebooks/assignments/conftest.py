"""Keep nbval away from the assignment notebooks (pyproject's `--nbval-lax` collects every notebook under notebooks/).

On purpose: the student versions in release/ fail by design (each function is `raise NotImplementedError()`, so the
test cells fail), and the solutions in source/ are run by tests/test_assignments.py through `nbgrader autograde`,
which checks more than nbval would: full marks for the solutions, zero for the blank versions, and exactly the lost
points for each typical mistake.
"""

collect_ignore_glob = ["*"]
