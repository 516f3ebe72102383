"""Conversation templates: turns -> prompt text -> token ids + supervision labels.

The supervision mask comes from character offsets of the rendered prompt, never from token-count heuristics: a
token is supervised iff it lies inside an assistant answer span (answer + stop marker). A token that straddles a
span boundary is a tokenization mismatch and raises an error naming the record, instead of silently masking the
whole sample out as the original code did. So does a message holding a literal special token ("</s>", "###",
a second "<image>", ...), which the tokenizer would read as the token itself and the original code would mask out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .constants import IGNORE_INDEX, IMAGE_TOKEN


class ConversationError(ValueError):
    """A record that cannot be turned into a training example; the message names the record."""


@dataclass(frozen=True)
class Template:
    """How turns become one string. style: "v0" (the paper), "v1" (Vicuna v1.1 / LLaVA-1.5) or "plain".

    v0 is the paper's Table 2 text, "system###Human: q###Assistant: a###", the same string the inference prompt
    uses. The official training code writes v0 differently ("system\\n\\n### Human: q\\n### Assistant: a\\n### ",
    `_add_speaker_and_signal`), while its v0 inference prompt is Table 2's; we train on the text we prompt with
    (algorithms/errata.md, entry 10).

    `image_first` moves <image> to the front of the first human turn ("<image>\\n" + the rest, stripped), as the
    official code's `preprocess_multimodal` does for LLaVA-1.5; off, the image stays on the side the data puts it
    (the paper put it before or after the question at random, and the released 158K files keep that).
    """

    name: str
    style: str
    system: str = ""
    roles: tuple[str, str] = ("Human", "Assistant")
    sep: str = "###"  # after the system message and after each human turn
    stop: str = "###"  # what ends an answer: supervised, and where generation stops
    image_first: bool = False

    def render(self, turns: list[tuple[str, str]],
               generation_prompt: bool = False) -> tuple[str, list[tuple[int, int]]]:
        """Render (role, message) turns, role in {"human", "gpt"}; return text and supervised (start, end) spans.

        With `generation_prompt`, the text ends where the assistant is to begin its answer.
        """
        _check_roles(turns, generation_prompt)
        if self.image_first:
            turns = move_image_first(turns)
        user, assistant = self.roles
        spans: list[tuple[int, int]] = []
        if self.style == "plain":  # stage-1 "plain" format of the later code: <image> + caption + "\n"
            if len(turns) > 2:
                raise ConversationError("the plain template takes one human turn and one answer")
            text = IMAGE_TOKEN if IMAGE_TOKEN in turns[0][1] else ""
            if len(turns) == 2:
                spans.append((len(text), len(text) + len(turns[1][1]) + 1))
                text += turns[1][1] + "\n"
            return text, spans
        if self.style not in ("v0", "v1"):
            raise ValueError(f"unknown template style {self.style!r}")
        # v0: system###Human: q###Assistant: a###...   v1: system USER: q ASSISTANT: a</s>...
        text = self.system + self.sep
        for role, msg in turns:
            if role == "human":
                text += f"{user}: {msg}{self.sep}"
            else:
                text += f"{assistant}:"
                start = len(text)  # the answer's leading space is supervised: the prompt ends at "Assistant:"
                text += f" {msg}{self.stop}"
                spans.append((start, len(text)))
        if generation_prompt:
            text += f"{assistant}:"
        return text, spans

    def reserved(self, tokenizer) -> list[str]:
        """Strings a message must not contain: the separator and stop marker the template writes (unless blank,
        as v1's " " and plain's "\\n"), and the tokenizer's special tokens but <image> (`check_messages`)."""
        used = (self.stop,) if self.style == "plain" else (self.sep, self.stop)
        marks = {s for s in used if s.strip()} | set(tokenizer.all_special_tokens)
        return sorted(marks - {IMAGE_TOKEN})


def move_image_first(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """<image> to the front of the first turn: "<image>\\n" + the turn without it, stripped (official code)."""
    role, msg = turns[0]
    if IMAGE_TOKEN not in msg:
        return turns
    return [(role, f"{IMAGE_TOKEN}\n{msg.replace(IMAGE_TOKEN, '').strip()}"), *turns[1:]]


def check_messages(turns: list[tuple[str, str]], template: Template, tokenizer) -> None:
    """Refuse literal special tokens in messages: the tokenizer would turn "</s>" in an answer into EOS, "###"
    into v0's separator, and so teach the model to stop mid-answer. <image> may appear once, in the first turn."""
    reserved = template.reserved(tokenizer)
    for i, (_, msg) in enumerate(turns):
        if found := [s for s in reserved if s in msg]:
            raise ConversationError(f"turn {i} contains {found[0]!r}, which the template or tokenizer reserves")
        if IMAGE_TOKEN in msg and (i > 0 or msg.count(IMAGE_TOKEN) > 1):
            raise ConversationError(f"turn {i}: {IMAGE_TOKEN} may appear only once, in the first turn")


def _check_roles(turns: list[tuple[str, str]], generation_prompt: bool) -> None:
    if not turns:
        raise ConversationError("no turns")
    for i, (role, msg) in enumerate(turns):
        expected = "human" if i % 2 == 0 else "gpt"
        if role != expected:
            raise ConversationError(f"turn {i} is from {role!r}, expected {expected!r} (turns must alternate)")
        if not msg.strip():
            raise ConversationError(f"turn {i} is empty")
    if generation_prompt and turns[-1][0] != "human":
        raise ConversationError("a generation prompt must end with a human turn")


TEMPLATES: dict[str, Template] = {
    "v0": Template(
        name="v0",
        style="v0",
        system="A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions.",
        roles=("Human", "Assistant"),
        sep="###",
        stop="###",
    ),
    "v1": Template(
        name="v1",
        style="v1",
        system="A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        roles=("USER", "ASSISTANT"),
        sep=" ",
        stop="</s>",
    ),
    "plain": Template(name="plain", style="plain", stop="\n"),
}
# v0 without its system message: not a LLaVA template; an experiment on the toy world's yes/no gap: it helped at
# some seeds in stage 2 alone, and not in the full pipeline (docs/experiments.md, "Across training seeds")
TEMPLATES["v0_no_system"] = replace(TEMPLATES["v0"], name="v0_no_system", system="")


@dataclass
class Example:
    """One tokenized training example; labels are unshifted, IGNORE_INDEX where unsupervised."""

    input_ids: torch.Tensor  # (t,)
    labels: torch.Tensor  # (t,)
    n_images: int = 0
    meta: dict = field(default_factory=dict)
    truncated: int = 0  # tokens cut off the end to fit max_len (truncate=True)


def tokenize_turns(
    turns: list[tuple[str, str]],
    tokenizer,
    template: Template,
    num_image_tokens: int,
    max_len: int | None = None,
    record: str = "?",
    truncate: bool = False,
) -> Example:
    """Render, tokenize, expand each <image> into `num_image_tokens` placeholders, and build labels from offsets.

    Alg 3, line 6: labels y_t = x_t inside assistant answers and their stop marker, -100 elsewhere.
    Longer than `max_len`: an error, or with `truncate` cut to `max_len` (see `tokenize_text`).
    """
    try:
        text, spans = template.render(turns)
        check_messages(turns, template, tokenizer)
    except ConversationError as exc:
        raise ConversationError(f"record {record}: {exc}") from None
    return tokenize_text(text, spans, tokenizer, num_image_tokens, max_len, record, truncate)


def tokenize_text(text, spans, tokenizer, num_image_tokens, max_len=None, record="?", truncate=False) -> Example:
    """`tokenize_turns` on rendered text and its supervised spans.

    `truncate` cuts input ids and labels alike at `max_len`, as the official code does (tokenizer truncation at
    model_max_length), but refuses a cut that would drop image placeholders or every supervised token.
    """
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids: list[int] = enc["input_ids"]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    labels = [IGNORE_INDEX] * len(ids)
    for i, (s, e) in enumerate(enc["offset_mapping"]):
        if e <= s:  # special tokens added by the tokenizer (BOS) have empty offsets
            continue
        for a, b in spans:
            if a <= s and e <= b:
                labels[i] = ids[i]
                break
            if s < a < e or s < b < e:
                raise ConversationError(
                    f"record {record}: tokenization mismatch: token {tokenizer.convert_ids_to_tokens(ids[i])!r} "
                    f"at characters {s}-{e} straddles the supervised span {a}-{b}"
                )
    n_supervised_chars = sum(b - a for a, b in spans)
    if spans and all(lab == IGNORE_INDEX for lab in labels):
        raise ConversationError(f"record {record}: no token is supervised ({n_supervised_chars} answer chars)")
    # each <image> becomes num_image_tokens placeholders; the model writes visual tokens into them (Alg 2)
    out_ids: list[int] = []
    out_labels: list[int] = []
    n_images = 0
    for tok, lab in zip(ids, labels):
        if tok == image_id:
            n_images += 1
            out_ids += [image_id] * num_image_tokens
            out_labels += [IGNORE_INDEX] * num_image_tokens
        else:
            out_ids.append(tok)
            out_labels.append(lab)
    n = len(out_ids)
    if max_len is None or n <= max_len:
        return Example(torch.tensor(out_ids), torch.tensor(out_labels), n_images)
    if not truncate:
        raise ConversationError(f"record {record}: {n} tokens is longer than max_len={max_len}")
    if image_id in out_ids[max_len:]:  # the model needs every placeholder of an image it is given
        raise ConversationError(f"record {record}: truncating {n} tokens to max_len={max_len} would cut into "
                                f"its image placeholders")
    if all(lab == IGNORE_INDEX for lab in out_labels[:max_len]):
        raise ConversationError(f"record {record}: truncating {n} tokens to max_len={max_len} would leave no "
                                f"supervised token")
    return Example(torch.tensor(out_ids[:max_len]), torch.tensor(out_labels[:max_len]), n_images,
                   truncated=n - max_len)


def pad_batch(examples: list[Example], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Stack examples into (b, t) tensors; right padding for training (Alg 3, line 7), left for batched generation
    (Alg 4, line 1)."""
    t = max(len(ex.input_ids) for ex in examples)
    input_ids = torch.full((len(examples), t), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), t), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), t), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        sl = slice(0, n) if side == "right" else slice(t - n, t)
        input_ids[row, sl] = ex.input_ids
        labels[row, sl] = ex.labels
        attention_mask[row, sl] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def template_named(name: str) -> Template:
    """TEMPLATES[name], or a ValueError that lists the valid names."""
    if name not in TEMPLATES:
        raise ValueError(f"template must be one of {sorted(TEMPLATES)}, got {name!r}")
    return TEMPLATES[name]
