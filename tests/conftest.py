"""Shared test fixtures: tiny things built locally (no hub, no downloads)."""
import string

import pytest


def _char_tokenizer(extra_special: tuple[str, ...] = ()):
    """A char-level fast tokenizer that prepends BOS like OPT's: ids 0 <pad>, 1 </s> (bos=eos),
    2 <unk>, then ``extra_special``, then printable ASCII chars (digits, '[', ',', ']', ...)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>", *extra_special]
    chars = " " + string.ascii_letters + string.digits + "[],.:;!?'-_()<>|/"
    vocab = {t: i for i, t in enumerate(specials + list(chars))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=list(extra_special), clean_up_tokenization_spaces=False,
    )


@pytest.fixture(scope="session")
def make_char_tokenizer():
    """The builder, for tests that need extra special tokens (e.g. BLIP-2's ``<image>``)."""
    return _char_tokenizer


@pytest.fixture(scope="session")
def char_tokenizer():
    return _char_tokenizer()
