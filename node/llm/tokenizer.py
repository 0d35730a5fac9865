"""Tokenizers trained locally with the `tokenizers` library, character- or word-level.

No tokenizer can be downloaded on an offline machine, so a tiny model's vocabulary is learned
from its task's corpus: every character (char level) or every whitespace-separated word (word
level), plus four special tokens. The result is a transformers fast tokenizer that pads on the
left (what batched generation needs) and saves with ``save_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from node.tasks.base import TokenizerLevel

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]


def train_tokenizer(texts: Iterable[str], level: TokenizerLevel, max_vocab: int = 8192) -> PreTrainedTokenizerFast:
    """A tokenizer whose vocabulary is the characters or words of texts (unknown ones map to <unk>)."""
    corpus: Sequence[str] = list(texts)
    if not corpus:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    if level == "char":
        # BPE without merges is exactly a character vocabulary, and keeps spaces and newlines.
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.decoder = decoders.Fuse()
        trainer: trainers.Trainer = trainers.BpeTrainer(
            vocab_size=1, special_tokens=SPECIAL_TOKENS, show_progress=False
        )
    elif level == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordLevelTrainer(vocab_size=max_vocab, special_tokens=SPECIAL_TOKENS, show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer level {level!r}; use char or word")
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def encode(tokenizer: PreTrainedTokenizerBase, text: str, add_bos: bool = True) -> list[int]:
    """Token ids of text, with the BOS token first when the tokenizer has one."""
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return [bos, *ids] if add_bos and bos is not None else ids
