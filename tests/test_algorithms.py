"""Traceability: every `# Alg N, line k` in the package names a real line, and every line of Algorithms 1-4 is cited.
Notation: notation.md defines each symbol once, and every symbol of the algorithm files. Errata: each entry names its
kind, and the entries that cite this file hold."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from tiny_llava import tiny_llava

from minillava.formal import (
    ALGORITHMS,
    algorithms,
    citations,
    math_symbols,
    notation,
    show,
    undefined_symbols,
)

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



def test_math_symbols_reads_subscripts_superscripts_and_indices():
    assert math_symbols(r"X_v^{(i)}, H_{kv}, x_t, m_{t'}, t_{(i-1)N + n}, \phi_\ell, O_H") == {
        "X_{v}", "H_{kv}", "x", "m", "t", r"\phi", "O"}
    assert math_symbols(r"\mathrm{softmax}(\Lambda[t] / \tau) \in \mathbb{R}^{T \times d}") == {r"\Lambda", "t", r"\tau"}
    assert math_symbols(r"W^\ell_{fc}, \cos_p, \cos(p\,\omega), \mathrm{Mask}, X_{\mathrm{instruct},<t}") == {
        "W_{fc}", r"\cos_{p}", "p", r"\omega", r"\mathrm{Mask}", r"X_{\mathrm{instruct}}"}


def test_notation_defines_each_symbol_once():
    defined = notation()
    twice = {symbol: lines for symbol, lines in defined.items() if len(lines) > 1}
    assert not twice, f"notation.md defines these symbols on more than one line: {twice}"
    for symbol in ("H_{v}", r"H_{\mathrm{ViT}}", "P", r"\Lambda", "M", r"\mathrm{Mask}", r"\tau", "J"):
        assert symbol in defined


def test_every_symbol_of_the_algorithms_is_defined_in_notation():
    missing = undefined_symbols()
    assert not missing, f"symbols used in algorithms/ but not defined in notation.md: {missing}"


def test_notation_checker_catches_a_clash_and_an_undefined_symbol(tmp_path):
    (tmp_path / "notation.md").write_text(
        "| symbol | meaning |\n|---|---|\n| $H_v \\in \\mathbb{R}^{N \\times d}$ | visual tokens |\n"
        "| $w$, $H_v$ | ViT width, heads |\n| $N$, $d$ | sizes |\n\n## Symbols that changed\n\n| $\\tau$ | old |\n")
    (tmp_path / "1_x.md").write_text("# Algorithm 1: X\n\n1. $H_v \\leftarrow \\mathrm{ViT}(X_v) + \\tau$\n")
    assert notation(tmp_path)["H_{v}"] == [3, 4]
    assert undefined_symbols(tmp_path) == {"X_{v}": ["1_x.md"], r"\tau": ["1_x.md"]}


KINDS = ("corrects a common summary", "corrects the seed", "our simplification")


def test_every_errata_entry_names_its_kind():
    text = (ALGORITHMS / "errata.md").read_text()
    entries = re.split(r"(?m)^(?=\d+\. \*\*)", text)[1:]
    assert [int(e.split(".")[0]) for e in entries] == list(range(1, len(entries) + 1))
    for entry in entries:
        kind = re.search(r"\*\*Kind:\*\* ([^.;(]+)", entry)
        assert kind and kind.group(1).strip() in KINDS, f"errata entry {entry[:60]!r} names no kind of {KINDS}"


def test_errata_15_adamw_on_a_mean_loss():
    from minillava.training import LlavaModule

    module = LlavaModule(stage=1, preset="toy", overrides={"llm.n_layers": 1, "llm.vocab_size": 64,
                                                          "image_token_id": 64})
    projector = {id(p) for p in module.model.projector.parameters()}  # builds the model (stage 1: theta = {W})
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)  # all that configure_optimizers reads
    opt = module.configure_optimizers()["optimizer"]
    assert type(opt) is torch.optim.AdamW
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["weight_decay"] == 0.0
    assert {id(p) for group in opt.param_groups for p in group["params"]} == projector
    # the loss is the mean over every supervised token of the batch: not a sum, not a mean of per-row means
    model = tiny_llava()
    torch.manual_seed(0)
    ids = torch.randint(5, 64, (2, 12))
    labels = torch.full_like(ids, -100)
    labels[0, 9:] = ids[0, 9:]  # 3 targets in row 0, 7 in row 1
    labels[1, 5:] = ids[1, 5:]
    out = model(ids, labels=labels)
    nll = torch.nn.functional.cross_entropy(out["logits"][:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    torch.testing.assert_close(out["loss"], nll.sum() / (labels[:, 1:] != -100).sum())
    twice = model(torch.cat([ids, ids]), labels=torch.cat([labels, labels]))["loss"]
    torch.testing.assert_close(twice, out["loss"])  # a summed loss would double


def test_errata_16_only_the_vision_tower_has_a_position_table():
    model = tiny_llava()
    table = re.compile(r"pos_emb|position|positional")
    llm = [name for name, _ in model.llm.named_parameters() if table.search(name)]
    vision = [name for name, _ in model.vision.named_parameters() if table.search(name)]
    assert llm == [], f"the LLM has a learned position table: {llm}"  # positions enter by rotary (Algorithm 7)
    assert vision and all(name.endswith("positional_embedding") for name in vision)  # CLIP's W_pos (Algorithm 11)
