"""The formal algorithms (algorithms/*.md) and the code lines that cite them (`# Alg 2, line 4`).

Used by the traceability test, which keeps the two in step, and by the notebooks, which print an algorithm's lines
from the Markdown itself beside the code that computes them, so the notebooks cannot drift from the text. The
notation checks (`notation`, `undefined_symbols`) keep algorithms/notation.md to one meaning per symbol and make it
define every symbol the algorithm files use.
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


# --- notation: every symbol the algorithms use is defined in notation.md, and defined once ---------------------

NOTATION = "notation.md"
_NOTATION_END = "## Symbols that changed"  # the tables above this heading define symbols; the rename table does not
_GREEK = {  # commands that are symbols (the rest, \leftarrow, \in, \odot, ..., are operators or layout)
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
    "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Phi", "Psi", "Omega", "ell",
}
_MATH = re.compile(r"\$([^$]+)\$")
_ATOM = re.compile(
    r"(\\mathcal\{[A-Z]\}|\\mathrm\{[A-Za-z]+\}|\\[A-Za-z]+|[A-Za-z])'*"  # a base: calligraphic, word, command, letter
    r"(?:_(\{(?:[^{}]|\{[^{}]*\})*\}|\\[A-Za-z]+|[A-Za-z0-9]))?"  # an optional subscript
)
_INDEX = re.compile(r"^(?:[0-9ijknrthHLMN'+\-()<,\s]|\\ell)*$")  # loop indices and their bounds: x_t, t_{(i-1)N + n}, O_H


def _subscript_part(sub: str) -> str:
    """The part of a subscript that names a symbol: index parts (`t`, `<i`, `\\ell`, `1`) are dropped."""
    inner = sub[1:-1] if sub.startswith("{") else sub
    parts = [p.strip() for p in inner.split(",")]
    return ",".join(p for p in parts if not _INDEX.match(p))


def math_symbols(math: str) -> set[str]:
    """The symbols in one LaTeX formula, e.g. "X_v", "H_{kv}", "\\Lambda", "\\mathcal{V}", "\\cos_p", "x".

    Superscripts, `\\mathbb`/`\\text` spans, primes and accents are dropped; a subscript of loop indices is dropped
    (`x_t` is `x`); `\\mathrm{...}` words are function or algorithm names (not symbols) except `\\mathrm{Mask}`;
    commands are symbols only when Greek (or `\\ell`), and `\\cos`/`\\sin` only with a subscript (`\\cos_p`).
    """
    s = re.sub(r"\\(?:text|mathbb|operatorname)\{[^{}]*\}", " ", math)
    s = re.sub(r"\^(?:\{(?:[^{}]|\{[^{}]*\})*\}|\\[A-Za-z]+|[A-Za-z0-9])", "", s)
    s = re.sub(r"\\[,;:! ]", " ", s)
    found = set()
    for m in _ATOM.finditer(s):
        base, sub = m.group(1), m.group(2)
        if base.startswith("\\mathrm") and base != "\\mathrm{Mask}":
            continue
        if base.startswith("\\") and not base.startswith(("\\mathcal", "\\mathrm")):
            name = base[1:]
            if name not in _GREEK and not (name in ("cos", "sin") and sub):
                continue
        part = _subscript_part(sub) if sub else ""
        found.add(f"{base}_{{{part}}}" if part else base)
    return found


def _defined_left(math: str) -> str:
    """The defined part of a first-column formula: what stands left of `\\in`, `=`, `\\geq`."""
    return re.split(r"\\in\b|=|\\geq\b", math, maxsplit=1)[0]


def notation(folder: Path = ALGORITHMS) -> dict[str, list[int]]:
    """symbol -> the lines of notation.md whose table row defines it (its first column, left of `\\in` or `=`)."""
    defined: dict[str, list[int]] = {}
    for i, line in enumerate((folder / NOTATION).read_text().splitlines(), 1):
        if line.startswith(_NOTATION_END):
            break
        if not line.startswith("| ") or line.startswith(("| symbol", "|---")):
            continue
        first = line.split(" | ")[0]
        for math in _MATH.findall(first):
            for symbol in math_symbols(_defined_left(math)):
                if i not in defined.setdefault(symbol, []):
                    defined[symbol].append(i)
    return defined


def undefined_symbols(folder: Path = ALGORITHMS) -> dict[str, list[str]]:
    """symbol -> the algorithm files that use it although notation.md does not define it."""
    defined = notation(folder)
    missing: dict[str, list[str]] = {}
    for alg in algorithms(folder).values():
        for math in _MATH.findall(alg.path.read_text()):
            for symbol in math_symbols(math) - set(defined):
                if alg.path.name not in missing.setdefault(symbol, []):
                    missing[symbol].append(alg.path.name)
    return missing
