"""The paper's generator: Stable Diffusion (diffusers) pictures of one object on a white
background, cut out by a foreground extractor (:mod:`pin.synth.foreground`).

Follows X-Paste: SD 1.5, fp16 on CUDA, DPM-Solver multistep, 50 steps, guidance 7.5, 512 px.
Each picture has its own CPU ``torch.Generator`` seeded by
:func:`pin.synth.generate.sample_seed`, so it does not depend on the batch or the process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pin.errors import PinError
from pin.params import GenerateParams
from pin.synth.backend import Rendered, prompt_from_template
from pin.synth.foreground import ForegroundFn, get_extractor


def _device(device=None):
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_pipeline(model: str, device=None, fp16: bool = True):
    """A StableDiffusionPipeline from a hub id or a local folder, on ``device`` (fp16 on CUDA),
    without the safety checker, with the DPM-Solver multistep scheduler."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    device = _device(device)
    dtype = torch.float16 if fp16 and device.type == "cuda" else torch.float32
    local = Path(model).expanduser()
    source = str(local) if local.exists() else model
    import logging

    quiet = logging.root.manager.disable
    logging.disable(logging.WARNING)  # diffusers logs hub retries: on failure the user gets one line, ours
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            source, dtype=dtype, safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PinError(
            f"cannot load the Stable Diffusion weights {model!r} ({first[:200]}). Set generate.model "
            "to a local folder holding a diffusers StableDiffusionPipeline (model_index.json, unet/, "
            "vae/, text_encoder/, tokenizer/, scheduler/), or download the model into the Hugging Face "
            "cache beforehand and run with HF_HUB_OFFLINE=1") from None
    finally:
        logging.disable(quiet)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    return pipe.to(device)


class DiffusersGenerator:
    """Text-to-image with a StableDiffusionPipeline, then foreground extraction.

    ``pipe`` may be injected (tests pass a tiny random-weight pipeline); otherwise it is loaded
    from ``params.model``. ``foreground`` defaults to the extractor named by ``params.matting``.
    A picture in which the extractor finds no object comes back as ``Rendered(None)``.
    """

    name = "diffusers"

    def __init__(self, params: GenerateParams, pipe=None, device=None,
                 foreground: ForegroundFn | None = None):
        if params.image_size % 8:
            raise PinError(f"generate.image_size={params.image_size} must be a multiple of 8 for Stable Diffusion")
        self.params = params
        self.batch_size = params.batch_size
        self.foreground = foreground or get_extractor(params.matting)
        self.injected = pipe is not None
        self.pipe = pipe if pipe is not None else load_pipeline(params.model, device, params.fp16)
        if hasattr(self.pipe, "set_progress_bar_config"):
            self.pipe.set_progress_bar_config(disable=True)

    def covers(self, category) -> bool:
        return True

    def prompt(self, category) -> str:
        return prompt_from_template(self.params.prompt, category)

    def render(self, jobs: Sequence):
        import torch

        p = self.params
        generators = [torch.Generator("cpu").manual_seed(j.seed) for j in jobs]
        negative = [p.negative_prompt] * len(jobs) if p.negative_prompt else None
        with torch.inference_mode():
            out = self.pipe(
                prompt=[j.prompt for j in jobs], negative_prompt=negative,
                num_inference_steps=p.steps, guidance_scale=p.guidance,
                height=p.image_size, width=p.image_size, generator=generators, output_type="pil")
        results = []
        for img in out.images:
            results.append(Rendered.from_cutout(self.foreground(img.convert("RGB")), img.width * img.height))
        return results

    def config(self) -> dict:
        import diffusers

        return {"model": "<injected>" if self.injected else self.params.model,
                "pipeline": type(self.pipe).__name__,
                "scheduler": type(getattr(self.pipe, "scheduler", None)).__name__,
                "diffusers": diffusers.__version__}
