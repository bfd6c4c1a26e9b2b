"""``pin check-weights``: load the paper profile's weights from disk and print their fingerprint.

Per component (vision encoder, fusion network, language model) the parameter count and dtype;
then one fixed input - a synthetic image computed from pixel coordinates (no randomness) and the
prompt "In the image is a dog located at" in the VLM's own template - gives the next-token logits
(their sum, the first few, the argmax) and the greedy answer. The same files on the same device
and dtype give the same lines, so a download can be compared with someone else's in one command.

Paths come from the ``vlm`` section of ``params.yaml`` (a relative path there is read from the
params file's folder when it is not found from the current one); flags override them. Each local
path is checked before anything heavy loads, and the error names the flag to fix.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pin.errors import PinError
from pin.frame import FRAME

PROBE_OBJECT = "dog"  # the prompt: the VLM's template around it, "In the image is a dog located at"
PROBE_SIZE = FRAME  # the frame every VLM here is fed
N_HEAD = 5  # how many leading logits are printed
MAX_NEW_TOKENS = 24
FLAGS = {"checkpoint": "--checkpoint", "lang_model": "--lang-model", "clip_model": "--clip-model",
         "clip_pretrained": "--clip-pretrained", "blip2_model": "--blip2-model"}


@dataclass(frozen=True)
class Component:
    name: str
    parameters: int
    dtypes: list[str]


@dataclass
class Report:
    vlm: str
    device: str
    components: list[Component]
    prompt: str = ""
    logit_sum: float = 0.0
    logit_head: list[float] = field(default_factory=list)
    argmax: int = -1
    answer: str = ""
    extras: list[Component] = field(default_factory=list)  # --diffusers / --clip: not in the total

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"{self.vlm} on {self.device}"]
        for c in self.components:
            out.append(f"  {c.name:<16} {c.parameters:>15,} parameters  {', '.join(c.dtypes)}")
        out.append(f"  {'total':<16} {sum(c.parameters for c in self.components):>15,} parameters")
        if self.prompt:
            head = ", ".join(f"{v:.4f}" for v in self.logit_head)
            out += [f"fixed input: synthetic {PROBE_SIZE}x{PROBE_SIZE} image, prompt {self.prompt!r}",
                    f"  next-token logits: sum {self.logit_sum:.4f}, first [{head}], argmax {self.argmax}",
                    f"  greedy answer: {self.answer!r}"]
        if self.extras:
            out.append("other weights")
            out += [f"  {c.name:<24} {c.parameters:>15,} parameters  {', '.join(c.dtypes)}" for c in self.extras]
        return out


def probe_image(size: int = PROBE_SIZE) -> Image.Image:
    """Red and green ramps along x and y, blue squares on a checkerboard: fixed, no RNG."""
    y, x = np.mgrid[0:size, 0:size]
    ramp = lambda v: (v * 255 // max(size - 1, 1)).astype(np.uint8)  # noqa: E731
    blue = (((x * 8 // size) + (y * 8 // size)) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([ramp(x), ramp(y), blue], axis=-1), "RGB")


def component(name: str, params) -> Component:
    unique = {id(p): p for p in params}.values()  # a tied or aliased tensor counts once
    return Component(name, sum(p.numel() for p in unique), sorted({str(p.dtype).removeprefix("torch.") for p in unique}))


# ---------------------------------------------------------------------------- settings
def vlm_settings(vlm: str, params_file: Path | None, flags: dict[str, str | None], device: str):
    """VLMParams from ``params_file``'s ``vlm`` section with the given flags on top; checks every
    local path first. The encoder runs at its own resolution (``image_size`` is not applied)."""
    from pin import params

    raw = params.load_yaml(params_file) if params_file is not None and params_file.is_file() else {}
    section = dict(raw.get("vlm") or {})
    origin = {k: f"params {params_file} vlm.{k}" for k in FLAGS if k in section}
    for key, value in flags.items():
        if value is not None:
            section[key], origin[key] = value, FLAGS[key]
    section.update(name=vlm, device=device, image_size=None)
    base = params_file.parent if params_file is not None else Path(".")
    for key, value in list(section.items()):  # relative paths in params.yaml: from its folder
        if origin.get(key, "").startswith("params") and isinstance(value, str) and value and \
                not Path(value).is_absolute() and not Path(value).exists() and (base / value).exists():
            section[key] = str(base / value)
    p = params.parse_section("vlm", section)
    _check_paths(p, lambda k: origin.get(k, f"the default vlm.{k}"))
    return p


def _check_paths(p, origin) -> None:
    def fail(key, value, what):
        raise PinError(f"{FLAGS[key]} {value}: {what} (value from {origin(key)})")

    if p.name == "openflamingo":
        ckpt = Path(p.checkpoint)
        if not (ckpt.is_file() or (ckpt / "checkpoint.pt").is_file()):
            fail("checkpoint", p.checkpoint, "no such file; pass the local checkpoint.pt of "
                 "openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct (or its folder)")
        if not (Path(p.lang_model) / "config.json").is_file():
            fail("lang_model", p.lang_model, "no config.json there; pass the local folder of "
                 "anas-awadalla/mpt-1b-redpajama-200b-dolly (model and tokenizer)")
        cp = p.clip_pretrained
        if ("/" in cp or cp.endswith((".pt", ".bin", ".safetensors"))) and not Path(cp).is_file():
            fail("clip_pretrained", cp, "no such file; pass the open_clip weights file, or a tag "
                 "(e.g. openai) that open_clip finds in its cache")
    elif p.name == "blip2" and not Path(p.blip2_model).is_dir():
        if not _in_hub_cache(p.blip2_model):
            fail("blip2_model", p.blip2_model, "neither a folder nor in the Hugging Face cache; pass the "
                 "save_pretrained folder of Salesforce/blip2-opt-2.7b (model, tokenizer, processor)")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id either (e.g. a path that does not exist)
        return False


def filter_clip_model(params_file: Path | None) -> str:
    """The open_clip model the filter stage scores with (``filter.model``), for ``--clip``."""
    from pin import params

    raw = params.load_yaml(params_file) if params_file is not None and params_file.is_file() else {}
    return str((raw.get("filter") or {}).get("model", "ViT-L-14-quickgelu"))


# ------------------------------------------------------------------------------- check
def components_of(vlm) -> list[Component]:
    if vlm.name == "blip2":
        m = vlm.model
        return [component("vision encoder", m.vision_model.parameters()),
                component("Q-Former", [m.query_tokens, *m.qformer.parameters(), *m.language_projection.parameters()]),
                component("language model", m.language_model.parameters())]
    f = vlm.flamingo
    xattn = list(f.lang_encoder.gated_cross_attn_layers.parameters())
    fusion_ids = {id(p) for p in xattn}
    return [component("vision encoder", f.vision_encoder.parameters()),
            component("fusion", [*f.perceiver.parameters(), *xattn]),
            component("language model", [p for p in f.lang_encoder.parameters() if id(p) not in fusion_ids])]


def next_token_logits(vlm, features: torch.Tensor, prompt: str) -> torch.Tensor:
    """The logits after the prompt, for one image; what greedy decoding's first step reads."""
    with torch.no_grad():
        if vlm.name == "blip2":
            # the adapter's own LM input layout (query embeds, BOS, prompt), as generate builds it
            embeds, mask = vlm._layout(vlm._query_embeds(features, None), vlm._prompt_ids([prompt]))
            return vlm.model.language_model(inputs_embeds=embeds, attention_mask=mask).logits[0, -1].float()
        ids = torch.tensor(vlm.teacher_forcing.prompt_ids([prompt]), device=vlm.device)
        return vlm.logits(features, ids, torch.ones_like(ids))[0, -1].float()


def check(vlm) -> Report:
    """Components and the fixed-input fingerprint of a loaded adapter."""
    report = Report(vlm.name, str(vlm.device), components_of(vlm))
    features = vlm.patch_features(vlm.preprocess([probe_image()]))
    report.prompt = vlm.prompt(PROBE_OBJECT)
    logits = next_token_logits(vlm, features, report.prompt)
    report.logit_sum = round(float(logits.double().sum()), 4)
    report.logit_head = [round(float(v), 4) for v in logits[:N_HEAD]]
    report.argmax = int(logits.argmax())
    report.answer = vlm.generate(features, [report.prompt], max_new_tokens=MAX_NEW_TOKENS)[0]
    return report


def check_vlm(vlm: str, params_file: Path | None, flags: dict[str, str | None], device: str = "cpu") -> Report:
    from pin.vlm.registry import load_vlm

    if vlm not in ("openflamingo", "blip2"):
        raise PinError(f"--vlm {vlm}: must be openflamingo or blip2 (the mini VLM is checked by `pin info`)")
    p = vlm_settings(vlm, params_file, flags, device)
    try:
        model = load_vlm(p)
    except PinError as err:
        if vlm == "blip2":
            raise PinError(f"--blip2-model {p.blip2_model}: {err}") from None
        raise
    return check(model)


def check_diffusers(path: str, device: str = "cpu") -> list[Component]:
    """The generate stage's Stable Diffusion folder: load it and count each network."""
    from pin.synth.diffusers_backend import load_pipeline

    if not Path(path).is_dir():
        raise PinError(f"--diffusers {path}: no such folder (a diffusers StableDiffusionPipeline save_pretrained)")
    try:
        pipe = load_pipeline(path, device=device, fp16=False)
    except PinError as err:
        raise PinError(f"--diffusers {path}: {err}") from None
    return [component(f"diffusers {n}", getattr(pipe, n).parameters()) for n in ("unet", "vae", "text_encoder")]


def check_clip(model: str, path: str, device: str = "cpu") -> list[Component]:
    """The filter stage's open_clip weights file for ``model``: load it and count both towers."""
    from pin.synth.clip_score import ClipScorer

    if not Path(path).is_file():
        raise PinError(f"--clip {path}: no such file (the open_clip weights for filter.model={model})")
    try:
        net = ClipScorer.from_pretrained(model, path, device=device).model
    except PinError as err:
        raise PinError(f"--clip {path}: {err}") from None
    text = [p for n, p in net.named_parameters() if not n.startswith("visual.")]
    return [component(f"clip {model} vision", net.visual.parameters()), component(f"clip {model} text", text)]
