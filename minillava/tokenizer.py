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


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer folder (ours or a real model's); a real one gets <image> and a pad token added if absent."""
    tok = AutoTokenizer.from_pretrained(str(path))
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token
    return tok
