"""Traceability: every `# Alg N, line k` in the package names a real line, and every line of Algorithms 1-4 is cited."""

from __future__ import annotations

import pytest

from minillava.formal import algorithms, citations, show

PAPER_ALGORITHMS = (1, 2, 3, 4)
SUPPORTING = (5, 6, 7, 8, 9, 10, 11)


def test_algorithm_files_are_complete():
    algs = algorithms()
    assert sorted(algs) == sorted(PAPER_ALGORITHMS + SUPPORTING)
    for alg in algs.values():
        text = alg.path.read_text()
        for part in ("**Input:**", "**Output:**", "**Hyperparameters:**", "**Parameters:**"):
            assert part in text, f"{alg.path.name} has no {part}"
        assert alg.lines, f"{alg.path.name} has no numbered lines"


def test_every_citation_names_an_existing_line():
    algs = algorithms()
    missing = {f"Alg {a}, line {n}": places for (a, n), places in citations().items()
               if a not in algs or n not in algs[a].lines}
    assert not missing, f"citations of lines that do not exist: {missing}"


@pytest.mark.parametrize("number", PAPER_ALGORITHMS)
def test_every_line_of_the_paper_algorithms_is_cited(number):
    cited = citations()
    uncited = [n for n in algorithms()[number].lines if (number, n) not in cited]
    assert not uncited, f"Algorithm {number}: lines {uncited} are cited nowhere in minillava/"


def test_checker_catches_a_bad_citation(tmp_path):
    (tmp_path / "a.py").write_text("x = 1  # Alg 2, lines 3-4\ny = 2  # Alg 99, line 1\n")
    cited = citations(tmp_path)
    assert cited[(2, 3)] == ["a.py:1"] and cited[(2, 4)] == ["a.py:1"] and (99, 1) in cited
    (tmp_path / "alg.md").write_text("# Algorithm 1: X\n\n1. a\n3. b\n")
    with pytest.raises(ValueError, match="do not run 1, 2, 3"):
        algorithms(tmp_path)


def test_show_renders_the_lines():
    assert show(1, [2]).startswith("**Algorithm 1: VisualTokens")
    assert "2. $Z_v" in show(1, [2])
