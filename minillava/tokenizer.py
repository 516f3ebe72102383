"""Tokenizers: a byte-level BPE trained on the toy world's text, wrapped as a transformers tokenizer.

The wrapper gives the toy model the same interface as a real Vicuna tokenizer (`save_pretrained`,
`from_pretrained`, offsets for label masks), so everything downstream treats both alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from .constants import IMAGE_TOKEN

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SEPARATOR = "###"  # the v0 template's turn separator; one token, so generation can stop on it cleanly


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE with LLaMA-style specials; a BOS is prepended to every encoded text.

    `vocab_size` is a cap: a small corpus may yield fewer merges, so size the model from `len(tokenizer)`.
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [UNK, BOS, EOS, PAD, IMAGE_TOKEN]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(SEPARATOR, normalized=False)])
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, bos_id)]),
    ])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[IMAGE_TOKEN],
    )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def local_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved in a local folder, as saved (nothing added); never looked up on the Hugging Face Hub.

    A hub name ("lmsys/vicuna-7b-v1.5") that is not a local folder is taken from the Hugging Face cache only.
    """
    folder = Path(path)
    if folder.is_dir():
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise FileNotFoundError(f"tokenizer not found at {path}: the folder has none of {list(TOKENIZER_FILES)}")
    elif folder.exists():
        raise FileNotFoundError(f"tokenizer not found at {path}: a file, not a tokenizer folder")
    elif folder.is_absolute() or str(path).startswith(".") or str(path).count("/") != 1:
        raise FileNotFoundError(f"tokenizer not found at {path}: no such folder")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        if folder.is_dir():
            raise ValueError(f"tokenizer at {path} is not readable: {exc}") from None
        raise FileNotFoundError(f"tokenizer not found at {path}: not a local folder, nor in the Hugging Face cache "
                                f"(nothing is downloaded)") from None


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer folder (ours or a real model's); a real one gets <image> and a pad token added if absent.

    A path that is not a tokenizer folder is `FileNotFoundError("tokenizer not found at PATH")` at once: nothing is
    looked up on the Hugging Face Hub (a hub name is read from the local cache only)."""
    tok = local_tokenizer(path)
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token
    return tok
