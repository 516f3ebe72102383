"""Templates and the supervision mask: only assistant answers and their stop marker are trained."""

from __future__ import annotations

import pytest
import torch

from minillava.constants import IGNORE_INDEX
from minillava.conversation import TEMPLATES, ConversationError, pad_batch, tokenize_turns

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
