"""Building OpenFlamingo from local files: the released checkpoint, the language model's folder
(MPT-1B through our native loader, never its remote code), the tokenizer and the open_clip vision
tower. What the paper profile needs on disk, and the messages when something is missing."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from pin.errors import PinError
from pin.vlm.of_checkpoint import load_checkpoint

log = logging.getLogger(__name__)

PARAMS_PREFIX = "vlm"  # the params.yaml section holding the paper profile's local paths


@dataclass(frozen=True)
class OpenFlamingoProfile:
    """The hub ids of one released OpenFlamingo model (for messages and documentation)."""

    checkpoint_id: str
    checkpoint_file: str
    clip_model: str
    clip_pretrained: str
    lang_id: str
    cross_attn_every_n_layers: int


OPENFLAMINGO_3B = OpenFlamingoProfile(
    checkpoint_id="openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct",
    checkpoint_file="checkpoint.pt",
    clip_model="ViT-L-14-quickgelu",  # OpenAI's weights were trained with QuickGELU
    clip_pretrained="openai",
    lang_id="anas-awadalla/mpt-1b-redpajama-200b-dolly",
    cross_attn_every_n_layers=1,
)


def build_openflamingo(
    checkpoint: str | Path | None,
    lang_dir: str | Path | None,
    tokenizer_dir: str | Path | None = None,
    *,
    clip_model: str = OPENFLAMINGO_3B.clip_model,
    clip_pretrained: str = OPENFLAMINGO_3B.clip_pretrained,
    cross_attn_every_n_layers: int = OPENFLAMINGO_3B.cross_attn_every_n_layers,
    decoder_layers_attr_name: str | None = None,
    ln_patch_tokens: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    profile: OpenFlamingoProfile = OPENFLAMINGO_3B,
) -> tuple[torch.nn.Module, object, object]:
    """Build OpenFlamingo (model, image processor, tokenizer) with ``open_flamingo.create_model_and_transforms`` from local files
    and load its checkpoint. Defaults are the paper's OpenFlamingo-3B (vitl-mpt1b-langinstruct):

    * ``checkpoint`` (params ``vlm.checkpoint``): a local copy of ``checkpoint.pt`` from
      ``openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct`` (``.safetensors`` also read),
      or a local snapshot folder of that repository;
    * ``lang_dir`` (params ``vlm.lang_model``): a local snapshot of
      ``anas-awadalla/mpt-1b-redpajama-200b-dolly``; its folder name must keep
      ``mpt-1b-redpajama-200b`` (open_flamingo's factory adds the ``get_input_embeddings``
      fix MPT-1B needs only when the path contains that string);
    * ``tokenizer_dir``: defaults to ``lang_dir``;
    * ``clip_model`` / ``clip_pretrained`` (params ``vlm.clip_model`` / ``vlm.clip_pretrained``):
      open_clip ``ViT-L-14-quickgelu`` with ``openai`` weights, which open_clip must find in its local
      cache (``HF_HUB_OFFLINE=1``), or a path to the weights file.

    ``ln_patch_tokens=False`` (default) feeds the perceiver patch tokens *without* the
    vision tower's final LayerNorm, as OpenFlamingo was trained (open_clip < 2.23 applied
    ``ln_post`` to the pooled token only; this project pins open_clip 3.3.0, whose default
    normalises all tokens, so ``final_ln_after_pool`` is switched on). The PIN authors ran
    open_clip 2.23.0 (normalised tokens): use ``ln_patch_tokens=True`` with their released PIN.

    The language side of the 3B model (MPT-1B, ``model_type: mosaic_gpt``) ships as hub remote
    code that fails on this transformers release (open_flamingo issues #294, #303, #306). It is
    not used: :func:`~pin.vlm.mpt.register_mosaic_gpt` runs first, so the factory's
    ``AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)`` builds
    :class:`~pin.vlm.mpt.MosaicGptForCausalLM` (transformers' own MPT plus QK LayerNorm, mosaic
    key names renamed as the weights load) and never imports the folder's Python files; an
    unsupported mosaic config value is refused with a :class:`~pin.errors.PinError` naming it.
    Tested with tiny random weights in the released on-disk format
    (:mod:`rehearsal.mosaic_standin`) against an explicit-math reference. NOT VERIFIED HERE: the
    real MPT-1B and OpenFlamingo-3B weights (no hub access on this machine).
    """
    import open_flamingo

    checkpoint, lang_dir, tokenizer_dir = _local_inputs(checkpoint, lang_dir, tokenizer_dir, clip_pretrained, profile)
    if _model_type(lang_dir) in {"mosaic_gpt", "mpt"}:
        decoder_layers_attr_name = _mpt_decoder_layers(lang_dir, decoder_layers_attr_name, profile)
    from pin.openclip_config import check_activation, open_clip_name

    clip_name = open_clip_name(clip_model, f"{PARAMS_PREFIX}.clip_model")  # a config JSON path is registered
    check_activation(clip_name, clip_pretrained, f"{PARAMS_PREFIX}.clip_model", f"{PARAMS_PREFIX}.clip_pretrained")
    flamingo, processor, tokenizer = _create(
        open_flamingo.create_model_and_transforms, clip_name, clip_model, clip_pretrained, lang_dir, tokenizer_dir,
        cross_attn_every_n_layers, decoder_layers_attr_name)
    # the released format (trainable weights only, aliases absent) or a full state_dict()
    load_checkpoint(flamingo, Path(checkpoint))
    flamingo.vision_encoder.final_ln_after_pool = not ln_patch_tokens
    # transformers 5 loads the LM in its config's torch_dtype while open_flamingo builds the
    # perceiver and cross-attention in fp32: one dtype for the whole model, fp32 unless asked
    flamingo.to(device=device, dtype=dtype if dtype is not None else torch.float32)
    return flamingo, processor, tokenizer


def _local_inputs(checkpoint, lang_dir, tokenizer_dir, clip_pretrained: str,
                  profile: OpenFlamingoProfile) -> tuple[str | Path | None, Path, Path]:
    """The checkpoint file and the language and tokenizer folders on local disk (hub ids resolved
    from the cache, a checkpoint folder to its file), checked before anything is built."""
    checkpoint = from_hub(checkpoint, profile.checkpoint_file)
    lang_dir = from_hub(lang_dir)
    tokenizer_dir = from_hub(tokenizer_dir) if tokenizer_dir is not None else lang_dir
    if checkpoint is not None and Path(checkpoint).is_dir():
        checkpoint = Path(checkpoint) / profile.checkpoint_file
    _check_inputs(profile, checkpoint, lang_dir, tokenizer_dir, clip_pretrained)
    return checkpoint, Path(lang_dir), Path(tokenizer_dir)


def _mpt_decoder_layers(lang_dir: Path, decoder_layers_attr_name: str | None, profile: OpenFlamingoProfile) -> str:
    """An MPT language folder's decoder-layers attribute, once its path passes open_flamingo's check."""
    if "mpt-1b-redpajama-200b" not in str(lang_dir):
        raise PinError(
            f"{PARAMS_PREFIX}.lang_model={lang_dir}: an MPT-1B folder must keep "
            f"'mpt-1b-redpajama-200b' in its path (open_flamingo keys its MPT fix on it); "
            f"rename it, e.g. to .../{profile.lang_id.split('/')[-1]}"
        )
    return decoder_layers_attr_name or "transformer.blocks"


def _create(create_model_and_transforms, clip_name: str, clip_model: str, clip_pretrained: str, lang_dir: Path,
            tokenizer_dir: Path, cross_attn_every_n_layers: int, decoder_layers_attr_name: str | None):
    """open_flamingo's factory on local files, its chatter sent to the debug log and its failures
    raised as one :class:`~pin.errors.PinError` naming the inputs."""
    # the factory passes trust_remote_code=True: our registered mosaic_gpt classes win over the
    # folder's auto_map, so MPT-1B's remote code is never imported
    from pin.vlm.mpt import register_mosaic_gpt

    register_mosaic_gpt()
    try:
        with contextlib.redirect_stdout(io.StringIO()) as said:
            flamingo, processor, tokenizer = create_model_and_transforms(
                clip_vision_encoder_path=clip_name,
                clip_vision_encoder_pretrained=clip_pretrained,
                lang_encoder_path=str(lang_dir),
                tokenizer_path=str(tokenizer_dir),
                cross_attn_every_n_layers=cross_attn_every_n_layers,
                use_local_files=True,
                decoder_layers_attr_name=decoder_layers_attr_name,
            )
        log.debug(said.getvalue().strip())
    except Exception as err:  # remote code / open_clip / transformers failures, chained
        raise PinError(
            f"could not build OpenFlamingo from clip={clip_model}:{clip_pretrained}, "
            f"lang={lang_dir}, tokenizer={tokenizer_dir}: {type(err).__name__}: {err}"
        ) from err
    return flamingo, processor, tokenizer


_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def from_hub(value: str | Path | None, filename: str | None = None) -> str | Path | None:
    """A hub id (``openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct``) that is not a local
    path -> its local copy: ``filename`` from the repository, or the repository's snapshot folder,
    downloaded into the Hugging Face cache (read from it with ``HF_HUB_OFFLINE=1``). A local path,
    or an id the hub and the cache cannot give, is returned as it is (the caller's checks name it)."""
    if value is None or Path(value).exists() or not _HUB_ID.match(str(value)):
        return value
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if filename is not None:
            return hf_hub_download(str(value), filename)
        return snapshot_download(str(value))
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, gated: the missing-weights message follows
        log.info("%s: not on the hub or in its cache (%s)", value, type(err).__name__)
        return value


def _missing_weights(profile: OpenFlamingoProfile, what: str) -> PinError:
    p = PARAMS_PREFIX
    return PinError(
        f"OpenFlamingo weights not found ({what}). The paper profile needs local copies of "
        f"{profile.checkpoint_id} ({profile.checkpoint_file}), {profile.lang_id} (model and "
        f"tokenizer) and open_clip {profile.clip_model}/{profile.clip_pretrained}; set "
        f"{p}.checkpoint to the checkpoint file, {p}.lang_model to the language model's folder "
        f"(and {p}.clip_pretrained to a weights file unless open_clip has '{profile.clip_pretrained}' "
        f"cached) - hub ids work where the hub, or its cache with HF_HUB_OFFLINE=1, has them - or use the "
        f"offline {p}.name=mini"
    )


def _check_inputs(profile, checkpoint, lang_dir, tokenizer_dir, clip_pretrained) -> None:
    if checkpoint is None or not Path(checkpoint).is_file():
        raise _missing_weights(profile, f"checkpoint={checkpoint}")
    if lang_dir is None or not (Path(lang_dir) / "config.json").is_file():
        raise _missing_weights(profile, f"lang_model={lang_dir} has no config.json")
    if not Path(tokenizer_dir).is_dir():
        raise _missing_weights(profile, f"tokenizer_dir={tokenizer_dir}")
    looks_like_path = "/" in clip_pretrained or clip_pretrained.endswith((".pt", ".bin", ".safetensors"))
    if looks_like_path and not Path(clip_pretrained).is_file():
        raise _missing_weights(profile, f"clip_pretrained={clip_pretrained}")
    from pin.weights import check_weights_file, check_weights_folder

    check_weights_file(checkpoint)  # damaged files: one line naming them, before any library reads them
    check_weights_folder(lang_dir)
    if looks_like_path:
        check_weights_file(clip_pretrained)


def _model_type(lang_dir: Path) -> str:
    try:
        return json.loads((lang_dir / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError) as err:
        raise PinError(f"{lang_dir / 'config.json'}: unreadable: {err}") from None
