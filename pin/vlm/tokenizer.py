"""A small word-level tokenizer for the tiny test VLMs and the offline "mini" VLM.

Built with the ``tokenizers`` library and wrapped in ``PreTrainedTokenizerFast`` so that it saves
and loads like any Hugging Face tokenizer (``save_pretrained`` / ``AutoTokenizer.from_pretrained``
on a local folder, no hub).

Tokenisation rules (lossless up to case for in-vocabulary text):

* text is lower-cased and every whitespace character becomes the space token ``"▁"``;
* a run of letters is one token (a word), every digit is its own token, every other character
  (``[`` ``,`` ``]`` ``.`` ``-`` ...) is its own token, every space is its own token;
* a word missing from the vocabulary becomes ``<unk>``;
* ``<image>``, ``<|endofchunk|>``, ``<pad>``, ``</s>`` and ``<unk>`` are special tokens.

So ``" [14,28,112,98]"`` is ``▁ [ 1 4 , 2 8 , 1 1 2 , 9 8 ]`` and decodes back exactly.
"""
from __future__ import annotations

import re
import string
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from pin.frame import FRAME

UNK = "<unk>"
PAD = "<pad>"
EOS = "</s>"
IMAGE = "<image>"
END_OF_CHUNK = "<|endofchunk|>"
SPECIAL_TOKENS = (UNK, PAD, EOS, IMAGE, END_OF_CHUNK)  # ids 0..4, in this order
SPACE = "\u2581"  # "▁"

DIGITS = tuple("0123456789")
PUNCTUATION = tuple(string.punctuation)

# Words every PIN prompt, caption or referral needs, besides the category names.
PROMPT_WORDS = ("in", "the", "image", "is", "a", "an", "located", "at", "of", "and", "there", "are")
COLOUR_WORDS = (
    "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white",
    "grey", "gray", "cyan", "magenta", "gold", "silver",
)
SHAPE_WORDS = (
    "square", "circle", "triangle", "rectangle", "star", "ellipse", "cross", "diamond", "shape",
    "object", "objects", "small", "large", "big", "tiny", "background",
)
COUNT_WORDS = (
    "no", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "many", "several", "with", "on", "next", "to", "photo", "picture", "this", "shows",
)
POSITION_WORDS = ("left", "right", "top", "bottom", "middle", "center", "centre", "above", "below")
BASE_WORDS = PROMPT_WORDS + COLOUR_WORDS + SHAPE_WORDS + COUNT_WORDS + POSITION_WORDS

# Pieces after normalisation: a word, one digit, one space, or one other character.
_PIECE = r"\p{L}+|\p{N}|" + SPACE + r"|[^\p{L}\p{N}" + SPACE + r"]"
# With whole numbers, a run of digits is one piece: "112" is one token, not three (each of
# 0..MAX_WHOLE_NUMBER is a vocabulary entry; a larger number becomes <unk>).
_PIECE_WHOLE = r"\p{L}+|\p{N}+|" + SPACE + r"|[^\p{L}\p{N}" + SPACE + r"]"
MAX_WHOLE_NUMBER = FRAME  # the largest box coordinate
_WORD = re.compile(r"[^\W\d_]+")


def words_from_names(names: Iterable[str]) -> list[str]:
    """The lower-cased words in ``names`` (``"traffic light"`` -> ``traffic``, ``light``;
    ``"t-shirt"`` -> ``t``, ``shirt``), sorted and deduplicated."""
    out: set[str] = set()
    for name in names:
        out.update(w.lower() for w in _WORD.findall(name))
    return sorted(out)


def build_vocab(words: Iterable[str] = (), include_base: bool = True, whole_numbers: bool = False) -> dict[str, int]:
    """Token -> id. Specials first (fixed ids 0..4), then space, digits, punctuation, the whole
    numbers 10..MAX_WHOLE_NUMBER when asked, and the sorted words; the same word set always
    gives the same ids."""
    numbers = [str(n) for n in range(10, MAX_WHOLE_NUMBER + 1)] if whole_numbers else []
    pieces = list(SPECIAL_TOKENS) + [SPACE, *DIGITS, *PUNCTUATION, *numbers]
    all_words = set(words_from_names(words))
    if include_base:
        all_words.update(BASE_WORDS)
    vocab: dict[str, int] = {}
    for p in pieces + sorted(all_words):
        vocab.setdefault(p, len(vocab))
    return vocab


def build_word_tokenizer(words: Iterable[str] = (), include_base: bool = True,
                         whole_numbers: bool = False) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` (split into words with :func:`words_from_names`)
    plus, unless ``include_base`` is False, :data:`BASE_WORDS`. ``whole_numbers``: a number up
    to MAX_WHOLE_NUMBER is one token (a box corner is then one choice, not a digit sequence)."""
    vocab = build_vocab(words, include_base, whole_numbers)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(Regex(r"\s"), SPACE)]
    )
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_PIECE_WHOLE if whole_numbers else _PIECE), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.Fuse()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=EOS,
        additional_special_tokens=[IMAGE, END_OF_CHUNK],
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> None:
    tokenizer.save_pretrained(str(directory))


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by :func:`save_tokenizer` (local files only)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
