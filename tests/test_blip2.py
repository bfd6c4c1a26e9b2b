"""Blip2Adapter on a tiny random-weight BLIP-2 (OPT) built from configs: no hub, CPU, seconds."""
import numpy as np
import pytest
import torch
from PIL import Image

from pin.boxes import BoxCodec
from pin.errors import PinError
from pin.insert import InsertConfig, PositionalInsert
from rehearsal.standins import unit_scale
from pin.vlm.base import InsertSite
from pin.vlm.blip2 import PAPER_MODEL, Blip2Adapter

torch.set_num_threads(1)

IMAGE_TOKEN = "<image>"
CODEC = BoxCodec(grid=4, frame=32)  # the tiny model's 32-px frame


def tiny_blip2(make_tokenizer, seed: int = 0):
    from transformers import Blip2Config, Blip2ForConditionalGeneration, BlipImageProcessor, OPTConfig

    tokenizer = make_tokenizer(extra_special=(IMAGE_TOKEN,))
    text = OPTConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
        max_position_embeddings=96, word_embed_proj_dim=32, pad_token_id=0, bos_token_id=1, eos_token_id=1,
    )
    config = Blip2Config(
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            encoder_hidden_size=32, vocab_size=64, max_position_embeddings=32),
        text_config=text.to_dict(),
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config)
    unit_scale(model)  # the configs' tiny init ranges would make it ignore its input (and the insert)
    with torch.no_grad():
        model.query_tokens.normal_(0, 1)
    processor = BlipImageProcessor(size={"height": 32, "width": 32})
    return model, tokenizer, processor


def images(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (20 + 7 * i, 40, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def adapter(make_char_tokenizer):
    return Blip2Adapter(*tiny_blip2(make_char_tokenizer))


@pytest.fixture(scope="module")
def features(adapter):
    return adapter.patch_features(adapter.preprocess(images(2)))


PROMPT = "In the image is a cat located at"
TAUGHT = [CODEC.encode((1, 0, 3, 2)), CODEC.encode((0, 2, 4, 4))]  # image i -> TAUGHT[i]


@pytest.fixture(scope="module")
def taught(make_char_tokenizer):
    """A tiny BLIP-2 first trained (all weights, through the library's own placeholder-token
    forward) to answer TAUGHT[i] for image i, then frozen: unlike a random one, its LM reads the
    query embeds, so an insert can steer it. Random tiny LMs barely depend on a 4-token prefix."""
    model, tok, processor = tiny_blip2(make_char_tokenizer)
    pixels = processor(images(2), return_tensors="pt").pixel_values
    image_ids = tok.convert_tokens_to_ids([IMAGE_TOKEN] * model.config.num_query_tokens)
    prompt_ids = image_ids + tok(PROMPT).input_ids
    rows = [prompt_ids + tok(a, add_special_tokens=False).input_ids + [tok.eos_token_id] for a in TAUGHT]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, : len(prompt_ids)] = -100
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        opt.zero_grad()
        model(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
    return Blip2Adapter(model, tok, processor)


def make_insert(adapter, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("hidden", (16, 16))
    return PositionalInsert(InsertConfig.for_site(adapter.site, **kw))


def test_site_frozen_and_features(adapter, features):
    assert adapter.site == InsertSite(n_positions=17, width=32, grid=4, has_cls=True)
    assert not any(p.requires_grad for p in adapter.model.parameters())
    assert not adapter.model.training
    pixels = adapter.preprocess(images(2))
    assert pixels.shape == (2, 3, 32, 32)
    assert features.shape == (2, 17, 32) and not features.requires_grad
    assert adapter.prompt("cat") == "In the image is a cat located at"
    assert adapter.answer_end == "</s>"


def test_grads_reach_only_the_insert(adapter, features):
    insert = make_insert(adapter, layout="swiglu")
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    opt = torch.optim.Adam(insert.parameters(), lr=1e-3)
    prompts = [adapter.prompt("cat"), adapter.prompt("traffic light")]
    answers = [CODEC.encode((0, 1, 2, 3)), CODEC.encode((1, 1, 4, 4))]
    for step in range(3):
        opt.zero_grad()
        loss = adapter.answer_loss(features, prompts, answers, insert())
        loss.backward()
        if step == 0:
            for name, p in insert.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        opt.step()
    assert all(p.grad is None for p in adapter.model.parameters())
    after = adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pin_steps_lower_the_loss(taught):
    feats = taught.patch_features(taught.preprocess(images(2)))
    insert = make_insert(taught, layout="authors")
    opt = torch.optim.Adam(insert.parameters(), lr=1e-2)
    prompts, answers = [PROMPT, PROMPT], [TAUGHT[1], TAUGHT[1]]
    with torch.no_grad():
        start = taught.answer_loss(feats, prompts, answers, insert()).item()
    for _ in range(30):
        opt.zero_grad()
        taught.answer_loss(feats, prompts, answers, insert()).backward()
        opt.step()
    with torch.no_grad():
        end = taught.answer_loss(feats, prompts, answers, insert()).item()
    assert end < 0.25 * start, (start, end)


def test_batched_loss_is_token_mean_of_rows(adapter, features):
    pi = make_insert(adapter, out_init=1.0)().detach()
    prompts = [adapter.prompt("cat"), adapter.prompt("very long object name")]
    answers = [" [0,8,16,24]", " [8,8,32,32]"]
    with torch.no_grad():
        both = adapter.answer_loss(features, prompts, answers, pi).item()
        rows = [adapter.answer_loss(features[i : i + 1], prompts[i : i + 1], answers[i : i + 1], pi).item()
                for i in range(2)]
    n = [len(a) + 1 for a in answers]  # char tokens + eos
    assert both == pytest.approx((rows[0] * n[0] + rows[1] * n[1]) / sum(n), rel=1e-5)


def test_loss_and_generate_mirror_hf_blip2(adapter, features):
    """Our composition gives the loss and greedy tokens of the library's own image-placeholder path."""
    model, tok = adapter.model, adapter.tokenizer
    pixels = adapter.preprocess(images(2))[:1]
    prompt, answer = adapter.prompt("cat"), " [0,8,16,24]"
    n_query = model.config.num_query_tokens
    image_ids = tok.convert_tokens_to_ids([IMAGE_TOKEN] * n_query)
    prompt_ids = tok(prompt).input_ids
    answer_ids = tok(answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
    ids = torch.tensor([image_ids + prompt_ids + answer_ids])
    labels = torch.tensor([[-100] * (n_query + len(prompt_ids)) + answer_ids])
    with torch.no_grad():
        ref = model(pixel_values=pixels, input_ids=ids, labels=labels).loss
        ours = adapter.answer_loss(adapter.patch_features(pixels), [prompt], [answer])
        assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
        hf = model.generate(pixel_values=pixels, input_ids=torch.tensor([image_ids + prompt_ids]),
                            max_new_tokens=6, do_sample=False, num_beams=1)
    new = hf[0, n_query + len(prompt_ids):].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    assert adapter.generate(adapter.patch_features(pixels), [prompt], max_new_tokens=6) == [tok.decode(new)]


def test_batched_generate_matches_single(adapter, features):
    pi = make_insert(adapter, out_init=1.0)().detach()
    prompts = [adapter.prompt("cat"), adapter.prompt("a much longer name")]
    both = adapter.generate(features, prompts, insert=pi, max_new_tokens=8)
    single = [adapter.generate(features[i : i + 1], prompts[i : i + 1], insert=pi, max_new_tokens=8)[0]
              for i in range(2)]
    assert both == single
    assert all(len(adapter.tokenizer(t, add_special_tokens=False).input_ids) <= 8 for t in both)
    beams = adapter.generate(features, prompts, insert=pi, max_new_tokens=8, num_beams=2)
    assert len(beams) == 2 and all(isinstance(t, str) for t in beams)


def test_teacher_forced_insert_changes_the_generated_box(taught):
    """PIN steps on one (image, prompt, answer): greedy decoding (KV cache) then reproduces the
    teacher-forced answer, which the codec parses; without the insert the model answers as taught."""
    feats = taught.patch_features(taught.preprocess(images(2)))[:1]
    assert taught.generate(feats, [PROMPT]) == [TAUGHT[0]]
    insert = make_insert(taught)
    opt = torch.optim.Adam(insert.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        loss = taught.answer_loss(feats, [PROMPT], [TAUGHT[1]], insert())
        loss.backward()
        opt.step()
    with torch.no_grad():
        text = taught.generate(feats, [PROMPT], insert=insert(), max_new_tokens=CODEC.max_answer_chars + 1)
    assert text == [TAUGHT[1]], (loss.item(), text)
    assert CODEC.parse(text[0]) == CODEC.to_frame((0, 2, 4, 4))
    assert taught.generate(feats, [PROMPT]) == [TAUGHT[0]]  # the VLM itself is unchanged


def test_shape_errors(adapter, features):
    with pytest.raises(ValueError):
        adapter.answer_loss(features, ["a"], ["b"])
    with pytest.raises(ValueError):
        adapter.generate(features, ["a", "b"], insert=torch.zeros(16, 32))


def test_from_pretrained_local_folder(tmp_path, adapter, make_char_tokenizer):
    model, tokenizer, processor = tiny_blip2(make_char_tokenizer, seed=1)
    for part in (model, tokenizer, processor):
        part.save_pretrained(tmp_path)
    loaded = Blip2Adapter.from_pretrained(tmp_path)
    assert loaded.site == adapter.site
    pixels = loaded.preprocess(images(1))
    with torch.no_grad():
        want = model.vision_model(pixel_values=pixels).last_hidden_state
    assert torch.allclose(loaded.patch_features(pixels), want)
    assert loaded.tokenizer(" [0,8]", add_special_tokens=False).input_ids == \
        tokenizer(" [0,8]", add_special_tokens=False).input_ids


def test_from_pretrained_unreachable_names_model(tmp_path):
    with pytest.raises(PinError, match="blip2-opt-2.7b.*local folder"):
        Blip2Adapter.from_pretrained(PAPER_MODEL, local_files_only=True)
    with pytest.raises(PinError, match="empty"):
        Blip2Adapter.from_pretrained(tmp_path / "empty", local_files_only=True)


# ------------------------------------------------- extension points for the baselines (pin.methods)
def test_lm_prefix_is_words_after_bos(adapter, features):
    """An lm_prefix holding the embeddings of some characters gives what writing them at the start
    of the prompt gives (after the query embeds and BOS), in the loss and in decoding."""
    words = "xy "
    ids = adapter.tokenizer(words, add_special_tokens=False).input_ids
    prefix = adapter.lm_input_embeddings.weight[ids].clone()
    prompts = [adapter.prompt("cat"), adapter.prompt("traffic light")]
    literal = [words + p for p in prompts]
    answers = [" [0,8,16,24]", " [8,8,32,32]"]
    with torch.no_grad():
        ours = adapter.answer_loss(features, prompts, answers, lm_prefix=prefix)
        theirs = adapter.answer_loss(features, literal, answers)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert adapter.generate(features, prompts, lm_prefix=prefix, max_new_tokens=6) == \
        adapter.generate(features, literal, max_new_tokens=6)


def test_fusion_tokens_join_the_qformer_input(adapter, features):
    tokens = torch.randn(3, adapter.site.width)
    with torch.no_grad():
        ours = adapter._query_embeds(features, None, tokens)
        m = adapter.model
        x = torch.cat([features, tokens.expand(2, 3, -1)], dim=1)
        out = m.qformer(query_embeds=m.query_tokens.expand(2, -1, -1), encoder_hidden_states=x,
                        encoder_attention_mask=torch.ones(x.shape[:-1], dtype=torch.long))
        theirs = m.language_projection(out.last_hidden_state)
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("name", ["pin", "vpt_fusion", "vpt_vision", "coop_llm", "lora_vision"])
def test_every_trained_method_on_blip2(name, make_char_tokenizer, train_method_steps):
    adapter = Blip2Adapter(*tiny_blip2(make_char_tokenizer))  # fresh: LoRA is injected into the encoder
    pixels = adapter.preprocess(images(2))
    prompts = [adapter.prompt("cat"), adapter.prompt("traffic light")]
    answers = [CODEC.encode((0, 1, 2, 3)), CODEC.encode((1, 1, 4, 4))]
    method, losses = train_method_steps(adapter, adapter.model, name, pixels, prompts, answers, steps=3)
    expected = {  # vision width 32 (2 blocks, MLP 64), OPT embeddings 32; conftest.TINY_BASELINES
        "pin": 2080 + 64 + 544 + 64 + 544,
        "vpt_fusion": 5 * 32, "vpt_vision": 5 * 32, "coop_llm": 3 * 32,
        "lora_vision": 2 * 4 * ((32 + 96) + (32 + 64) + (64 + 32)),  # qkv, fc1, fc2
    }
    assert method.n_trainable_params == expected[name]
    assert losses[-1] < losses[0], losses


def test_no_incontext_learning_on_blip2(adapter):
    from pin.methods import build_method
    from pin.params import BaselinesParams, InsertParams

    with pytest.raises(PinError, match="interleaved"):
        build_method("incontext", adapter, InsertParams(), BaselinesParams())


def test_higher_resolution(make_char_tokenizer):
    adapter = Blip2Adapter(*tiny_blip2(make_char_tokenizer))
    before = adapter.input_size
    adapter.set_image_size(48)
    assert (before, adapter.input_size) != (48, 48) and adapter.input_size == 48  # what evaluation squashes to
    assert adapter.site == InsertSite(n_positions=37, width=32, grid=6, has_cls=True)
    pixels = adapter.preprocess(images(1))
    assert pixels.shape == (1, 3, 48, 48)
    feats = adapter.patch_features(pixels)
    assert feats.shape == (1, 37, 32)
    insert = make_insert(adapter)  # an insert sized for the new grid
    assert insert().shape == (37, 32)
    assert isinstance(adapter.generate(feats, [PROMPT], insert=insert().detach(), max_new_tokens=3)[0], str)


def test_beam_search_decodes_each_prompt_as_alone(adapter):
    """eval.num_beams (the authors' run script: 3) through transformers' beam search."""
    import torch

    feats = adapter.patch_features(adapter.preprocess(images(2)))
    both = adapter.generate(feats, [PROMPT, PROMPT + " the"], max_new_tokens=5, num_beams=3)
    alone = [adapter.generate(feats[i:i + 1], [p], max_new_tokens=5, num_beams=3)[0]
             for i, p in enumerate([PROMPT, PROMPT + " the"])]
    assert both == alone and all(isinstance(t, str) for t in both)
    assert torch.equal(adapter.patch_features(adapter.preprocess(images(2))), feats)
