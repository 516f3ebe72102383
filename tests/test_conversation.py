"""Templates and the supervision mask: only assistant answers and their stop marker are trained."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from llama_tokenizer import tiny_llama_tokenizer

from minillava.constants import IGNORE_INDEX
from minillava.conversation import TEMPLATES, ConversationError, move_image_first, pad_batch, tokenize_turns
from minillava.tokenizer import load_tokenizer

TURNS = [
    ("human", "<image>\nWhat colour is the circle?"),
    ("gpt", "The circle is red."),
    ("human", "How many objects are in the image?"),
    ("gpt", "3"),
]


def test_v0_renders_the_papers_format():
    text, spans = TEMPLATES["v0"].render(TURNS)
    assert text.startswith("A chat between a curious human and an artificial intelligence assistant.")
    assert text.endswith(
        "###Human: <image>\nWhat colour is the circle?###Assistant: The circle is red.###"
        "Human: How many objects are in the image?###Assistant: 3###"
    )
    assert [text[a:b] for a, b in spans] == [" The circle is red.###", " 3###"]
    prompt, _ = TEMPLATES["v0"].render(TURNS[:1], generation_prompt=True)
    assert prompt.endswith("###Assistant:")


def test_v0_no_system_is_v0_without_its_system_message():
    text, spans = TEMPLATES["v0_no_system"].render(TURNS)
    v0_text, v0_spans = TEMPLATES["v0"].render(TURNS)
    cut = len(TEMPLATES["v0"].system)
    assert text == v0_text[cut:] and text.startswith("###Human: <image>\n")
    assert [text[a:b] for a, b in spans] == [v0_text[a:b] for a, b in v0_spans]


def test_v1_renders_vicuna_format():
    text, spans = TEMPLATES["v1"].render(TURNS)
    assert "USER: <image>\nWhat colour is the circle? ASSISTANT: The circle is red.</s>USER: How many" in text
    assert [text[a:b] for a, b in spans] == [" The circle is red.</s>", " 3</s>"]


def test_only_answers_and_stop_markers_are_supervised(tokenizer):
    ex = tokenize_turns(TURNS, tokenizer, TEMPLATES["v0"], num_image_tokens=16)
    supervised = ex.input_ids[ex.labels != IGNORE_INDEX]
    assert tokenizer.decode(supervised) == " The circle is red.### 3###"
    assert torch.equal(ex.labels[ex.labels != IGNORE_INDEX], supervised)  # unshifted labels
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert int((ex.input_ids == image_id).sum()) == 16 and ex.n_images == 1
    assert ex.input_ids[0] == tokenizer.bos_token_id and ex.labels[0] == IGNORE_INDEX
    # the rendered prompt round-trips: nothing was dropped or reordered
    text, _ = TEMPLATES["v0"].render(TURNS)
    decoded = tokenizer.decode(ex.input_ids[ex.input_ids != image_id], skip_special_tokens=False)
    assert decoded == tokenizer.bos_token + text.replace("<image>", "")


@pytest.mark.parametrize(
    "turns,match",
    [
        ([("gpt", "hi"), ("human", "<image>\nq")], "turn 0 is from 'gpt'"),
        ([("human", "<image>\nq"), ("gpt", "  ")], "turn 1 is empty"),
        ([("human", "<image>\nq"), ("human", "again")], "turn 1 is from 'human'"),
    ],
)
def test_bad_turns_name_the_record(tokenizer, turns, match):
    with pytest.raises(ConversationError, match=f"record rec-7: {match}"):
        tokenize_turns(turns, tokenizer, TEMPLATES["v0"], 16, record="rec-7")


def test_too_long_is_an_error_not_a_truncation(tokenizer):
    with pytest.raises(ConversationError, match="record r1: .* longer than max_len=20"):
        tokenize_turns(TURNS, tokenizer, TEMPLATES["v0"], 16, max_len=20, record="r1")


def test_pad_batch_sides(tokenizer):
    a = tokenize_turns(TURNS[:2], tokenizer, TEMPLATES["v0"], 4)
    b = tokenize_turns(TURNS, tokenizer, TEMPLATES["v0"], 4)
    right = pad_batch([a, b], tokenizer.pad_token_id, "right")
    left = pad_batch([a, b], tokenizer.pad_token_id, "left")
    n = len(a.input_ids)
    assert right["attention_mask"][0, :n].all() and not right["attention_mask"][0, n:].any()
    assert left["attention_mask"][0, -n:].all() and not left["attention_mask"][0, :-n].any()
    assert (right["labels"][0, n:] == IGNORE_INDEX).all()


def test_plain_template_is_image_then_caption(tokenizer):
    turns = [("human", "<image>\nDescribe the image concisely."), ("gpt", "A red circle.")]
    text, spans = TEMPLATES["plain"].render(turns)
    assert text == "<image>A red circle.\n" and [text[a:b] for a, b in spans] == ["A red circle.\n"]
    ex = tokenize_turns(turns, tokenizer, TEMPLATES["plain"], num_image_tokens=4)
    assert tokenizer.decode(ex.input_ids[ex.labels != IGNORE_INDEX]) == "A red circle.\n"


# -- with a LLaMA-style tokenizer (Vicuna's kind), the options of the paper's and LLaVA-1.5's recipes -------------


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_tokenizer(tiny_llama_tokenizer(tmp_path_factory.mktemp("llama")))


def test_image_token_is_added_after_the_llama_vocabulary(llama):
    base = len(llama) - 1
    assert llama.convert_tokens_to_ids("<image>") == base  # 32000 for Vicuna's 32000 pieces
    assert (llama.bos_token_id, llama.eos_token_id, llama.unk_token_id, llama.pad_token_id) == (1, 2, 0, 0)


@pytest.mark.parametrize("first", ["<image>\nWhat is in the image?", "What is in the image?\n<image>"])
@pytest.mark.parametrize("template", ["v0", "v1"])
def test_image_splits_cleanly_before_or_after_the_question(llama, first, template):
    turns = [("human", first), ("gpt", "A red circle."), ("human", "How many objects?"), ("gpt", "Three.")]
    ex = tokenize_turns(turns, llama, TEMPLATES[template], num_image_tokens=5, record="r")
    image_id = llama.convert_tokens_to_ids("<image>")
    at = (ex.input_ids == image_id).nonzero().flatten().tolist()
    assert ex.n_images == 1 and at == list(range(at[0], at[0] + 5))  # one run of placeholders
    newline = llama.convert_tokens_to_ids("<0x0A>")  # "\n" is a byte token on either side of <image>
    assert ex.input_ids[at[-1] + 1] == newline if first.startswith("<image>") else ex.input_ids[at[0] - 1] == newline
    stop = TEMPLATES[template].stop
    assert llama.decode(ex.input_ids[ex.labels != IGNORE_INDEX]) == f"A red circle.{stop} Three.{stop}"
    text, _ = TEMPLATES[template].render(turns)
    kept = ex.input_ids[ex.input_ids != image_id]
    assert kept[0] == llama.bos_token_id and llama.decode(kept[1:]) == text.replace("<image>", "")  # all there


def test_image_first_moves_the_image_as_the_official_code_does():
    turns = [("human", " Where is the cat?\n<image>"), ("gpt", "On the couch.")]
    assert move_image_first(turns) == [("human", "<image>\nWhere is the cat?"), ("gpt", "On the couch.")]
    assert move_image_first([("human", "Hi"), ("gpt", "Hello")]) == [("human", "Hi"), ("gpt", "Hello")]
    v1_first = replace(TEMPLATES["v1"], image_first=True)
    assert "USER: <image>\nWhere is the cat? ASSISTANT:" in v1_first.render(turns)[0]
    assert "USER:  Where is the cat?\n<image> ASSISTANT:" in TEMPLATES["v1"].render(turns)[0]  # the data's side


@pytest.mark.parametrize(
    "template,turns,found",
    [
        ("v1", [("human", "<image>\nq"), ("gpt", "a </s> b")], "'</s>'"),
        ("v0", [("human", "<image>\nq"), ("gpt", "### Heading")], "'###'"),
        ("v1", [("human", "say <s>"), ("gpt", "ok")], "'<s>'"),
        ("v1", [("human", "q"), ("gpt", "an <unk> here")], "'<unk>'"),
        ("plain", [("human", "<image>\nq"), ("gpt", "a caption</s>")], "'</s>'"),
        ("v1", [("human", "<image>\nq"), ("gpt", "see <image>")], "turn 1: <image> may appear only once"),
        ("v1", [("human", "<image>\nq <image>"), ("gpt", "a")], "turn 0: <image> may appear only once"),
    ],
)
def test_literal_special_tokens_in_a_message_are_refused(llama, template, turns, found):
    with pytest.raises(ConversationError, match=f"record rec-3: .*{found}"):
        tokenize_turns(turns, llama, TEMPLATES[template], 4, record="rec-3")


def test_markers_of_other_templates_are_plain_text(llama):
    turns = [("human", "Format it"), ("gpt", "### Title\nText")]  # markdown: fine for v1, whose stop is </s>
    ex = tokenize_turns(turns, llama, TEMPLATES["v1"], 4)
    assert llama.decode(ex.input_ids[ex.labels != IGNORE_INDEX]) == "### Title\nText</s>"


def test_truncation_cuts_ids_and_labels_alike(llama):
    full = tokenize_turns(TURNS, llama, TEMPLATES["v1"], 8)
    n = len(full.input_ids)
    with pytest.raises(ConversationError, match=f"record r1: {n} tokens is longer than max_len={n - 3}"):
        tokenize_turns(TURNS, llama, TEMPLATES["v1"], 8, max_len=n - 3, record="r1")
    cut = tokenize_turns(TURNS, llama, TEMPLATES["v1"], 8, max_len=n - 3, record="r1", truncate=True)
    assert torch.equal(cut.input_ids, full.input_ids[: n - 3]) and torch.equal(cut.labels, full.labels[: n - 3])
    assert (cut.truncated, full.truncated) == (3, 0) and cut.n_images == 1


def test_truncation_refuses_to_cut_an_image_or_every_answer(llama):
    turns = [("human", "What is this?\n<image>"), ("gpt", "A cat.")]
    ex = tokenize_turns(turns, llama, TEMPLATES["v1"], 8)
    first_image = int((ex.input_ids == llama.convert_tokens_to_ids("<image>")).nonzero()[0])
    with pytest.raises(ConversationError, match="record r2: truncating .* would cut into its image placeholders"):
        tokenize_turns(turns, llama, TEMPLATES["v1"], 8, max_len=first_image + 3, record="r2", truncate=True)
    first_label = int((ex.labels != IGNORE_INDEX).nonzero()[0])
    with pytest.raises(ConversationError, match="record r3: truncating .* would leave no supervised token"):
        tokenize_turns(turns, llama, TEMPLATES["v1"], 8, max_len=first_label, record="r3", truncate=True)


def test_a_sentencepiece_vicuna_folder_loads_with_image_after_its_vocabulary(tmp_path):
    """Vicuna's folders ship tokenizer.model (sentencepiece) and no tokenizer.json: transformers 5 converts it,
    which needs the sentencepiece and protobuf packages (not dependencies of minillava)."""
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    import io
    import json

    from llama_tokenizer import CORPUS

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(  # LLaMA's settings: BPE, byte fallback, <unk> <s> </s> = 0 1 2, no pad
        sentence_iterator=iter(CORPUS * 20), model_writer=model, model_type="bpe", vocab_size=300,
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True, character_coverage=1.0,
        remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2)
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({  # as lmsys/vicuna-7b-v1.5's
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "legacy": False, "model_max_length": 4096, "pad_token": None, "padding_side": "right",
        "tokenizer_class": "LlamaTokenizer"}))
    tok = load_tokenizer(tmp_path)
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert tok.convert_tokens_to_ids("<image>") == processor.get_piece_size() and tok.pad_token == "<unk>"
    text = "What is in the image? Three objects."
    assert tok(text)["input_ids"] == [1] + processor.encode(text)
    ex = tokenize_turns(TURNS, tok, TEMPLATES["v1"], 4)
    assert tok.decode(ex.input_ids[ex.labels != IGNORE_INDEX]) == "The circle is red.</s> 3</s>"
