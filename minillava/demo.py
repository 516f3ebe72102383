"""The web demo: upload an image, chat about it; the same model loading and conversation as `minillava chat`.

    pip install -e ".[demo]"
    minillava chat runs/toy --web              # http://127.0.0.1:7860
    python -m minillava.demo runs/toy --port 7861

Gradio is an optional extra, imported only here. `DemoChat.respond` is the page's handler, usable without it:
gradio's message history (`[{"role": "user" | "assistant", "content": str}, ...]`), the new message and the
uploaded image in; the history with the answer growing out, one yield per streamed piece. The conversation is
rebuilt from the history at every message, so the page holds no state the handler does not see.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from .chat import ChatError, ChatModel, ChatSession, load_chat_model
from .constants import IMAGE_TOKEN
from .generate import SamplingConfig


def _gradio():
    try:
        import gradio
    except ImportError:
        raise SystemExit("the web demo needs gradio: pip install -e \".[demo]\" (or pip install gradio)") from None
    return gradio


class DemoChat:
    """The page's handler over one loaded model."""

    def __init__(self, chat: ChatModel, sampling: SamplingConfig = SamplingConfig(), aspect_ratio: str = "crop"):
        self.session = ChatSession(chat, sampling, aspect_ratio=aspect_ratio)

    def respond(self, message: str, history: list[dict] | None, image=None) -> Iterator[list[dict]]:
        history = [{"role": m["role"], "content": _text(m["content"])} for m in (history or [])]
        shown = [*history, {"role": "user", "content": message}]
        session = self.session
        try:
            session.set_image(image)  # an image: a PIL image, an array or a path; None: text only
            turns: list[tuple[str, str]] = []
            for m in history:  # the conversation so far, as the chat's turns
                role = "human" if m["role"] == "user" else "gpt"
                if turns and turns[-1][0] == role:  # gradio may split one turn: join it
                    turns[-1] = (role, turns[-1][1] + "\n" + m["content"])
                else:
                    turns.append((role, m["content"]))
            if turns and turns[-1][0] == "human":  # a question left unanswered: keep only whole exchanges
                turns.pop()
            if turns and session.pixels is not None:
                turns[0] = ("human", f"{IMAGE_TOKEN}\n{turns[0][1]}")
            session.turns = turns
            answer = ""
            for piece in session.ask(message):
                answer += piece
                yield [*shown, {"role": "assistant", "content": answer}]
            if not answer:
                yield [*shown, {"role": "assistant", "content": "(no answer: the model stopped at once)"}]
        except ChatError as exc:
            yield [*shown, {"role": "assistant", "content": f"Error: {exc}"}]


def _text(content) -> str:
    """A message's text: gradio may hand content as a string or as a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "\n".join(_text(c) for c in content if not isinstance(c, dict) or c.get("type", "text") == "text")
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)


def build_demo(chat: ChatModel, sampling: SamplingConfig = SamplingConfig(), image=None, aspect_ratio: str = "crop"):
    """The gradio page: an image upload, a chat box, a text field; answers stream into the chat."""
    gr = _gradio()
    handler = DemoChat(chat, sampling, aspect_ratio)

    def submit(message, history, image):
        if not message or not message.strip():
            yield history, ""
            return
        for updated in handler.respond(message, history, image):
            yield updated, ""

    with gr.Blocks(title="minillava") as demo:
        gr.Markdown(f"## minillava: chat about an image\n{chat.source}. A new image starts a new conversation.")
        with gr.Row():
            with gr.Column(scale=1):
                picture = gr.Image(value=image, type="pil", label="image", height=320)
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="conversation", height=420)
                box = gr.Textbox(placeholder="Ask about the image and press Enter", show_label=False)
                clear = gr.Button("New conversation")
        box.submit(submit, [box, chatbot, picture], [chatbot, box])
        clear.click(lambda: ([], ""), None, [chatbot, box])
        picture.change(lambda: ([], ""), None, [chatbot, box])
    return demo


def launch(chat: ChatModel, sampling: SamplingConfig = SamplingConfig(), port: int = 7860, image=None,
           aspect_ratio: str = "crop") -> None:
    if image is not None:
        from PIL import Image

        image = Image.open(image).convert("RGB")
    build_demo(chat, sampling, image, aspect_ratio).launch(server_name="127.0.0.1", server_port=port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minillava.demo", description="The minillava web demo.")
    parser.add_argument("model", help="a toy run folder or a transformers Llava folder")
    parser.add_argument("--image", help="an image shown when the page opens")
    parser.add_argument("--template", default=None)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    try:
        chat = load_chat_model(args.model, args.template)
    except ChatError as exc:
        raise SystemExit(f"minillava demo: {exc}") from None
    launch(chat, SamplingConfig(args.max_new_tokens, args.temperature, args.top_p), args.port, args.image)


if __name__ == "__main__":
    main()
