"""Tiny random-weight stand-ins of the paper's models, each written in the format the real
weights come in, so the paper profile's loaders read them exactly as they would read a download:

* Stable Diffusion: a diffusers ``save_pretrained`` folder (model_index.json, unet/, vae/,
  text_encoder/, tokenizer/, scheduler/);
* CLIP: an open_clip model-config JSON plus a checkpoint file of its state dict
  (``open_clip_pytorch_model.bin``);
* OpenFlamingo: ``checkpoint.pt`` holding only the parameters open_flamingo trains, next to a
  mosaic_gpt-format language model folder (written by :mod:`rehearsal.mosaic_standin`);
* BLIP-2: a transformers ``save_pretrained`` folder (model, tokenizer, image processor).

The numbers are random: these prove that files, formats and code paths fit together, not that
any model is good.
"""
from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

import torch

CLIP_NAME = "pin-rehearsal-clip"
# open_clip ViT at 32 px, patch 8: a 4x4 patch grid; the text tower only for the filter's scores
CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLIP_WEIGHTS = "open_clip_pytorch_model.bin"
LM_FOLDER = "mpt-1b-redpajama-200b-dolly"  # open_flamingo keys MPT-1B's embedding fix on this name
IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class StandIns:
    """Where each stand-in was written (the paths the rehearsal passes as params)."""

    sd: Path
    clip_config: Path
    clip_weights: Path
    of_checkpoint: Path | None
    of_lang: Path | None
    blip2: Path

    def files(self) -> list[Path]:
        """Every file of every stand-in - weights, configs, tokenizers (hashed before and after)."""
        roots = [self.sd, self.blip2, self.clip_config, self.clip_weights, self.of_checkpoint, self.of_lang]
        out = []
        for root in filter(None, roots):
            out += [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        return out


def unit_scale(model: torch.nn.Module) -> None:
    """Transformers' tiny init ranges (1e-10 for some vision towers, 0.02 elsewhere) make a random
    tiny model ignore its input; unit-scale weights let a signal through every part."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, module.in_features ** -0.5)
            elif isinstance(module, torch.nn.Embedding):
                module.weight.normal_(0, 1)


def write_stable_diffusion(folder: Path, seed: int = 0) -> Path:
    """A StableDiffusionPipeline with a 2-block UNet and VAE and a 2-layer CLIP text encoder over
    a letter-level BPE vocabulary, saved with ``save_pretrained``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), norm_num_groups=8,
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4)
    vae = AutoencoderKL(
        block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=100, max_position_embeddings=77))
    vocab_dir = folder.parent / f".{folder.name}-vocab"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + ",":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (vocab_dir / "vocab.json").write_text(json.dumps(vocab))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"), model_max_length=77)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def write_open_clip(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """``folder/<CLIP_NAME>.json`` (an open_clip model config: the params name it by path) and
    ``folder/open_clip_pytorch_model.bin`` (its random state dict, as open_clip loads a file)."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{CLIP_NAME}.json"
    config.write_text(json.dumps(CLIP_CONFIG, indent=1))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(CLIP_NAME, pretrained=None)
    weights = folder / CLIP_WEIGHTS
    torch.save(model.state_dict(), weights)
    return config, weights


def char_tokenizer(extra_special: tuple[str, ...] = ()):
    """A character-level fast tokenizer that starts each text with BOS as OPT's does: ids 0
    <pad>, 1 </s> (BOS = EOS), 2 <unk>, then ``extra_special``, then printable ASCII."""
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
        additional_special_tokens=list(extra_special), clean_up_tokenization_spaces=False)


def write_blip2(folder: Path, seed: int = 0) -> Path:
    """A BLIP-2 (OPT) with a 2-layer ViT at 32 px (4x4 patches), 2-layer Q-Former and 2-layer OPT,
    saved with ``save_pretrained`` together with its tokenizer and image processor."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, BlipImageProcessor, OPTConfig

    tokenizer = char_tokenizer(extra_special=(IMAGE_TOKEN,))
    text = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                     num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=32,
                     pad_token_id=0, bos_token_id=1, eos_token_id=1)
    config = Blip2Config(
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            encoder_hidden_size=32, vocab_size=64, max_position_embeddings=32),
        text_config=text.to_dict(), num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config)
    unit_scale(model)
    with torch.no_grad():  # the ViT's patch and position embeddings start at ~1e-10: all patches alike
        model.query_tokens.normal_(0, 1)
        emb = model.vision_model.embeddings
        emb.patch_embedding.weight.normal_(0, emb.patch_embedding.weight[0].numel() ** -0.5)
        emb.position_embedding.normal_(0, 0.5)
        emb.class_embedding.normal_(0, 1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def write_openflamingo(folder: Path, clip_config: Path, clip_weights: Path, seed: int = 0) -> tuple[Path, Path]:
    """``<LM_FOLDER>/`` next to ``folder`` (a mosaic_gpt language model with its tokenizer) and
    ``folder/checkpoint.pt``: what open_flamingo's trainer saves - the trainable parameters
    (perceiver, the gated cross-attention inside each decoder block, the LM's input embedding),
    under their in-block names, without the vision encoder or the frozen LM."""
    import contextlib
    import io

    import open_clip
    import open_flamingo

    from rehearsal.mosaic_standin import write_tiny_mosaic_gpt

    lang = folder.parent / LM_FOLDER
    write_tiny_mosaic_gpt(lang, seed=seed)
    open_clip.add_model_config(clip_config)
    from pin.vlm.mpt import register_mosaic_gpt

    register_mosaic_gpt()
    torch.manual_seed(seed + 1)
    with contextlib.redirect_stdout(io.StringIO()):
        flamingo, _, _ = open_flamingo.create_model_and_transforms(
            CLIP_NAME, str(clip_weights), str(lang), str(lang), cross_attn_every_n_layers=1,
            use_local_files=True, decoder_layers_attr_name="transformer.blocks")
    with torch.no_grad():  # open gates: a fresh Flamingo (tanh(0) = 0) would ignore the image
        for name, p in flamingo.named_parameters():
            if name.endswith(("attn_gate", "ff_gate")):
                p.fill_(1.0)
    keep = ("perceiver.", "lang_encoder.transformer.wte.weight")
    state = {k: v for k, v in flamingo.state_dict().items()
             if k.startswith(keep) or (k.startswith("lang_encoder.transformer.blocks.") and ".gated_cross_attn_layer." in k)}
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "checkpoint.pt"
    torch.save(state, checkpoint)
    return checkpoint, lang


def write_all(root: Path, openflamingo: bool = True, seed: int = 0) -> StandIns:
    """Every stand-in under ``root/models``."""
    models = root / "models"
    sd = write_stable_diffusion(models / "stable-diffusion-v1-5", seed)
    clip_config, clip_weights = write_open_clip(models / "clip", seed)
    blip2 = write_blip2(models / "blip2-opt-2.7b", seed)
    ckpt = lang = None
    if openflamingo:
        ckpt, lang = write_openflamingo(models / "OpenFlamingo-3B-vitl-mpt1b-langinstruct", clip_config,
                                        clip_weights, seed)
    return StandIns(sd, clip_config, clip_weights, ckpt, lang, blip2)
