"""The formal algorithms (algorithms/*.md) and the code lines that cite them (`# Alg 2, line 4`).

Used by the traceability test, which keeps the two in step, and by the notebooks, which print an algorithm's lines
from the Markdown itself beside the code that computes them, so the notebooks cannot drift from the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ROOT / "algorithms"
PACKAGE = Path(__file__).resolve().parent

_HEADER = re.compile(r"^# Algorithm (\d+): (.+)$")
_LINE = re.compile(r"^(\d+)\.\s+(.*)$")
_CITATION = re.compile(r"Alg (\d+), lines? (\d+)(?:-(\d+))?")


@dataclass(frozen=True)
class Algorithm:
    number: int
    title: str
    path: Path
    lines: dict[int, str]  # line number -> its Markdown text


def algorithms(folder: Path = ALGORITHMS) -> dict[int, Algorithm]:
    """Every `# Algorithm N: title` file in `folder`, with its numbered lines (which must run 1, 2, 3, ...)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: the algorithms folder is missing (run from a checkout of the repository)")
    found: dict[int, Algorithm] = {}
    for path in sorted(folder.glob("*.md")):
        text = path.read_text().splitlines()
        header = _HEADER.match(text[0]) if text else None
        if header is None:
            continue  # README, notation, errata
        number = int(header.group(1))
        if number in found:
            raise ValueError(f"{path}: Algorithm {number} is also defined in {found[number].path.name}")
        lines = {int(m.group(1)): m.group(2) for m in map(_LINE.match, text) if m}
        if list(lines) != list(range(1, len(lines) + 1)):
            raise ValueError(f"{path}: line numbers {list(lines)} do not run 1, 2, 3, ...")
        found[number] = Algorithm(number, header.group(2), path, lines)
    return found


def citations(package: Path = PACKAGE) -> dict[tuple[int, int], list[str]]:
    """(algorithm, line) -> the places ("llama.py:120") in the package that cite it."""
    cited: dict[tuple[int, int], list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for i, text in enumerate(path.read_text().splitlines(), 1):
            for m in _CITATION.finditer(text):
                first = int(m.group(2))
                last = int(m.group(3) or first)
                for line in range(first, last + 1):
                    cited.setdefault((int(m.group(1)), line), []).append(f"{path.relative_to(package)}:{i}")
    return cited


def show(number: int, lines: list[int] | None = None) -> str:
    """An algorithm's title and lines as Markdown (for notebooks: `display(Markdown(show(1)))`)."""
    alg = algorithms()[number]
    chosen = lines or list(alg.lines)
    body = "\n".join(f"{n}. {alg.lines[n]}" for n in chosen)
    return f"**Algorithm {number}: {alg.title}**\n\n{body}"
