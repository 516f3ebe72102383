"""`minillava chat`: a multi-turn conversation about an image, in the terminal, the answer streamed as it is made.

    minillava chat runs/toy --image runs/toy/data/images/eval_000000.png
    minillava chat hf-llava/ --image photo.jpg --temperature 0.7 --top-p 0.9
    printf 'How many shapes are there?\\n/reset\\n' | minillava chat runs/toy --image scene.png

The model comes from a toy run folder (`minillava toy`: report.json, weights/stage2.safetensors, tokenizer/), the
notebooks' course run (notebooks/results/course-run), or a
transformers-format Llava folder (`export_hf_llava`'s, or a downloaded llava-hf checkpoint: config.json, weights,
tokenizer files). The chat template is the run's (a toy run records it in report.json); a transformers folder gets
v1, LLaVA-1.5's (`--template` chooses another). The image goes into the first question, as in the paper's data;
`/image PATH` starts a new conversation about another image, `/reset` starts over with the same one. Each answer is
decoded by minillava/fast_generate.py (the reference loop's tokens) and printed as it grows.

`ChatSession` is the conversation without the terminal; the web demo (minillava/demo.py) drives the same one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .constants import IMAGE_TOKEN
from .conversation import ConversationError, Template, check_messages, template_named, tokenize_text
from .generate import SamplingConfig
from .model import Llava


class ChatError(ValueError):
    """Something the user can fix (a path, a message); the text names it."""


@dataclass
class ChatModel:
    model: Llava
    tokenizer: object
    template: Template
    source: str  # what was loaded, in words

    @property
    def image_size(self) -> int:
        return self.model.cfg.vision.image_size


def load_chat_model(path: str | Path, template: str | None = None) -> ChatModel:
    """A toy run folder or a transformers Llava folder -> the model, its tokenizer and its chat template."""
    path = Path(path)
    if not path.exists():
        raise ChatError(f"model folder {path} not found")
    if not path.is_dir():
        raise ChatError(f"{path} is a file; give a toy run folder or a transformers Llava folder")
    try:
        if (path / "provenance.json").is_file():  # the notebooks' course run (minillava/course.py)
            return _load_course_run(path, template)
        if (path / "report.json").is_file() or (path / "weights").is_dir():
            return _load_toy_run(path, template)
        if (path / "config.json").is_file():
            return _load_hf_folder(path, template)
    except ChatError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ChatError(f"cannot load the model in {path}: {exc}") from None
    raise ChatError(f"{path} is neither a toy run folder (report.json, weights/stage2.safetensors, tokenizer/) nor a "
                    f"transformers Llava folder (config.json, model.safetensors, tokenizer files)")


def _load_toy_run(path: Path, template: str | None) -> ChatModel:
    import json

    from .toy import load_stage2_model

    for need in ("report.json", "weights/stage2.safetensors", "tokenizer"):
        if not (path / need).exists():
            raise ChatError(f"{path} is not a finished toy run: {path / need} not found")
    model, tokenizer = load_stage2_model(path)
    name = template or json.loads((path / "report.json").read_text())["config"].get("template", "v0")
    return ChatModel(model, tokenizer, template_named(name), f"toy run {path} (template {name})")


def _load_course_run(path: Path, template: str | None) -> ChatModel:
    import json

    from .course import load_course_model

    model, tokenizer = load_course_model(path, "stage2")
    name = template or json.loads((path / "report.json").read_text())["config"].get("template", "v0")
    return ChatModel(model, tokenizer, template_named(name), f"course run {path} (template {name})")


def _load_hf_folder(path: Path, template: str | None) -> ChatModel:
    from .checkpoints.hf_llava import load_hf_llava
    from .tokenizer import load_tokenizer

    model = load_hf_llava(path)
    tokenizer = load_tokenizer(path)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id != model.cfg.image_token_id:
        raise ChatError(f"{path}: the tokenizer's {IMAGE_TOKEN} is id {image_id}, the model's image_token_id "
                        f"{model.cfg.image_token_id}")
    name = template or "v1"
    return ChatModel(model, tokenizer, template_named(name), f"transformers Llava {path} (template {name})")


def read_image(path: str | Path, image_size: int, aspect_ratio: str = "crop") -> torch.Tensor:
    """An image file -> the tower's input (3, H, W); a clear error naming the file if it cannot be read."""
    from PIL import Image

    from .data.images import clip_transform, to_rgb

    path = Path(path)
    if not path.exists():
        raise ChatError(f"image {path} not found")
    if path.is_dir():
        raise ChatError(f"image {path} is a folder, not an image file")
    try:
        with Image.open(path) as im:
            return clip_transform(image_size, aspect_ratio)(to_rgb(im))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        why = "not an image Pillow can read" if isinstance(exc, Image.UnidentifiedImageError) else str(exc)
        raise ChatError(f"cannot read image {path}: {why}") from None


def image_tensor(image, image_size: int, aspect_ratio: str = "crop") -> torch.Tensor:
    """A PIL image, a numpy array (H, W, 3) or a file path -> the tower's input (3, H, W)."""
    if isinstance(image, (str, Path)):
        return read_image(image, image_size, aspect_ratio)
    from PIL import Image

    from .data.images import clip_transform, to_rgb

    if not isinstance(image, Image.Image):
        import numpy as np

        image = Image.fromarray(np.asarray(image))
    return clip_transform(image_size, aspect_ratio)(to_rgb(image))


@dataclass
class ChatSession:
    """One conversation: its turns so far and its image. `ask` streams the next answer and records it."""

    chat: ChatModel
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    compile: bool = False
    aspect_ratio: str = "crop"
    turns: list[tuple[str, str]] = field(default_factory=list)
    pixels: torch.Tensor | None = None  # (3, H, W)
    image_name: str | None = None

    def __post_init__(self) -> None:
        from .fast_generate import FastGenerator

        self.generator = FastGenerator(self.chat.model, compile=self.compile)

    def set_image(self, image, name: str | None = None) -> None:
        """A new image (path, PIL image or array) starts a new conversation about it; None: no image."""
        self.pixels = None if image is None else image_tensor(image, self.chat.image_size, self.aspect_ratio)
        if image is None:
            self.image_name = None
        else:
            self.image_name = name or (str(image) if isinstance(image, (str, Path)) else "an uploaded image")
        self.reset()

    def reset(self) -> None:
        self.turns = []

    def prompt_ids(self, question: str) -> torch.Tensor:
        """The conversation so far plus `question`, rendered up to the assistant's turn: (1, t) token ids."""
        tmpl, tok = self.chat.template, self.chat.tokenizer
        question = question.strip()
        if not question:
            raise ChatError("empty question")
        if IMAGE_TOKEN in question:
            raise ChatError(f"{IMAGE_TOKEN} is written by the chat itself; use /image PATH to show an image")
        first = question if self.pixels is None or self.turns else f"{IMAGE_TOKEN}\n{question}"
        turns = [*self.turns, ("human", first)]
        try:
            check_messages(turns, tmpl, tok)
        except ConversationError as exc:
            raise ChatError(f"cannot send this message: {exc}") from None
        budget = self.chat.model.cfg.llm.max_seq_len - self.sampling.max_new_tokens
        while True:  # past the context the model was trained on: forget the oldest exchanges but the first
            text, _ = tmpl.render(turns, generation_prompt=True)
            ids = tokenize_text(text, [], tok, self.chat.model.cfg.num_image_tokens).input_ids
            if len(ids) <= budget or len(turns) <= 3:
                break
            turns = turns[:2] + turns[4:]
        if len(ids) > budget:
            raise ChatError(f"the conversation is {len(ids)} tokens, more than the model's context of "
                            f"{self.chat.model.cfg.llm.max_seq_len} less {self.sampling.max_new_tokens} new tokens; "
                            f"/reset, or a shorter question")
        self._pending = (turns[:-1], first)
        return ids[None]

    def ask(self, question: str) -> Iterator[str]:
        """Stream the answer to `question` (pieces of text); the exchange joins the conversation once finished."""
        ids = self.prompt_ids(question)
        history, first = self._pending
        pixels = None if self.pixels is None else self.pixels[None]
        pieces = []
        for piece in self.generator.stream(ids, self.chat.tokenizer, self.chat.template.stop, pixels, self.sampling):
            pieces.append(piece)
            yield piece
        answer = "".join(pieces).strip()
        # an empty answer cannot be a turn of the template: that exchange is left out of the history
        self.turns = [*history, ("human", first), ("gpt", answer)] if answer else history


HELP = """commands: /image PATH (a new conversation about another image), /reset (start over), /help, /quit
anything else is a question about the image"""


def chat_main(argv: list[str]) -> None:
    from .conversation import TEMPLATES

    parser = argparse.ArgumentParser(
        prog="minillava chat",
        description="Chat about an image with a toy run or a transformers Llava folder; answers are streamed. "
                    "Reads questions from the terminal or a pipe, one per line; " + HELP.replace("\n", "; "))
    parser.add_argument("model", help="a toy run folder (minillava toy --out) or a transformers Llava folder")
    parser.add_argument("--image", help="the image to talk about (or /image PATH later)")
    parser.add_argument("--template", choices=sorted(TEMPLATES), default=None,
                        help="chat template (default: the run's; v1 for a transformers folder)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (with --temperature > 0)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
    parser.add_argument("--aspect-ratio", choices=("crop", "pad"), default="crop",
                        help="crop: CLIP's centre crop (default); pad: LLaVA-1.5's pad to square first")
    parser.add_argument("--compile", action="store_true",
                        help="compile the one-token step with torch.compile (faster per token, tens of seconds to "
                             "start)")
    parser.add_argument("--web", action="store_true", help="serve the web demo instead (needs the `demo` extra)")
    parser.add_argument("--port", type=int, default=7860, help="--web: the port on 127.0.0.1")
    args = parser.parse_args(argv)
    if args.temperature < 0:
        parser.error(f"--temperature must be >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        parser.error(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              seed=args.seed)
    try:
        chat = load_chat_model(args.model, args.template)
        session = ChatSession(chat, sampling, compile=args.compile, aspect_ratio=args.aspect_ratio)
        if args.image:
            session.set_image(args.image)
    except ChatError as exc:
        raise SystemExit(f"minillava chat: {exc}") from None
    if args.web:
        from .demo import launch

        launch(chat, sampling, port=args.port, image=args.image, aspect_ratio=args.aspect_ratio)
        return
    run_terminal(session, sys.stdin, sys.stdout)


def run_terminal(session: ChatSession, stdin, stdout) -> None:
    """The read-answer loop. From a terminal: a `you>` prompt; from a pipe: each question echoed after `>`."""
    tty = stdin.isatty()
    err = sys.stderr

    def say(text: str = "", end: str = "\n") -> None:
        stdout.write(text + end)
        stdout.flush()

    say(f"minillava chat: {session.chat.source}; "
        f"image: {session.image_name or 'none (/image PATH)'}. /help for commands.")
    while True:
        if tty:
            stdout.write("you> ")
            stdout.flush()
        line = stdin.readline()
        if not line:  # end of input
            if tty:
                say()
            return
        line = line.strip()
        if not line:
            continue
        if not tty:
            say(f"> {line}")
        if line in ("/quit", "/exit"):
            return
        if line == "/help":
            say(HELP)
            continue
        if line == "/reset":
            session.reset()
            say("(new conversation)")
            continue
        if line.startswith("/image"):
            path = line[len("/image"):].strip()
            if not path:
                say("usage: /image PATH", end="\n")
                continue
            try:
                session.set_image(path)
            except ChatError as exc:
                err.write(f"minillava chat: {exc}\n")
                err.flush()
                continue
            say(f"(new conversation about {path})")
            continue
        if line.startswith("/"):
            say(f"unknown command {line.split()[0]}; {HELP}")
            continue
        try:
            stdout.write("assistant> ")
            for piece in session.ask(line):
                stdout.write(piece)
                stdout.flush()
            say()
        except ChatError as exc:
            say()
            err.write(f"minillava chat: {exc}\n")
            err.flush()
