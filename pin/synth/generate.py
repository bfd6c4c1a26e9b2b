"""The generate stage: pictures of single objects, one folder per category, plus a manifest.

Output (under ``out_dir``, default ``data/objects``)::

    images/<category_slug>/<index:04d>.png   RGBA, cropped tight to the object (alpha > 0)
    manifest.parquet                        one row per picture (see MANIFEST_COLUMNS)
    _config.json                            fingerprint of the config the pictures belong to

Backends: ``openmoji`` (offline; :class:`pin.synth.emoji.OpenMojiGenerator`) and ``diffusers``
(the paper's Stable Diffusion; :class:`pin.synth.diffusers_backend.DiffusersGenerator`); what
they take and return (``Job``, ``Rendered``, the ``Generator`` protocol) is in
:mod:`pin.synth.backend`.

Every picture's randomness comes from :func:`sample_seed` (params seed, category, index), so a
picture does not depend on which process made it, on the batch it was in, or on a resume.
Work is resumable: finished PNGs are kept (each is written atomically; the temporary files of a
killed run are deleted on the next start) and only missing ones are made; a picture the
foreground extractor rejects leaves a ``.skip`` marker so a resume does not retry it, and is
counted in the summary. Under ``accelerate launch`` process *i* takes
categories *i*, *i + world_size*, ...; the main process writes the manifest once all are done.
Run as K independent jobs (``shard``, e.g. a SLURM array), job *i* takes categories *i*, *i + K*,
... into a folder of its own; :mod:`pin.synth.generate_shards` merges the K folders into the bytes
of one run.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, PngImagePlugin

from pin.categories import Category, load_set, split_of
from pin.errors import PinError
from pin.io import atomic_write_bytes, prepare_resumable_dir, remove_temp_files, tmp_path_for
from pin.params import GenerateParams
from pin.synth.backend import Generator, Job

MANIFEST = "manifest.parquet"
MANIFEST_COLUMNS = ["category", "split", "index", "path", "seed", "prompt", "width", "height",
                    "mask_area_frac", "backend"]
# Bump when a change in this code (not in params) changes the pictures: old work is then redone.
GENERATOR_VERSION = 3


def sample_seed(seed: int, category: str, index: int) -> int:
    """The seed of one picture: a 63-bit hash of (params seed, category name, index)."""
    digest = hashlib.sha256(f"pin-generate|{seed}|{category}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass
class GenerateResult:
    set_name: str
    backend: str
    categories: dict[str, int]  # split -> number of categories
    images: int  # rows in the manifest
    made: int = 0  # pictures made by this run (this process)
    reused: int = 0  # pictures found from an earlier run
    skipped: int = 0  # jobs the foreground extractor rejected (no picture)
    manifest: Path | None = None
    per_split_images: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        cats = " + ".join(f"{self.categories[s]} {s}" for s in ("train", "heldout") if s in self.categories)
        text = (f"{self.set_name}/{self.backend}: {cats} categories; {self.images} images "
                f"({self.made} made, {self.reused} reused")
        if self.skipped:
            text += f", {self.skipped} rejected by the foreground extractor"
        return text + ")"


# ----------------------------------------------------------------------------------------------
# Categories and jobs
# ----------------------------------------------------------------------------------------------
def select_categories(
    categories: Iterable[Category], covers, max_categories: int | None = None
) -> list[tuple[Category, str]]:
    """The categories a run makes pictures of, with their split, in the set's order.

    Only those the backend ``covers``; with ``max_categories`` = N, the first N training and the
    first N held-out ones.
    """
    chosen: list[tuple[Category, str]] = []
    taken = {"train": 0, "heldout": 0}
    for cat in categories:
        if not covers(cat):
            continue
        split = split_of(cat)
        if max_categories is not None and taken[split] >= max_categories:
            continue
        taken[split] += 1
        chosen.append((cat, split))
    return chosen


def plan_jobs(chosen: Sequence[tuple[Category, str]], backend: Generator, params: GenerateParams) -> list[Job]:
    jobs = []
    for cat, split in chosen:
        prompt = backend.prompt(cat)
        for i in range(params.per_category):
            jobs.append(Job(cat, split, i, sample_seed(params.seed, cat.name, i), prompt))
    return jobs


# ----------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------
class _LocalState:
    num_processes = 1
    process_index = 0
    is_main_process = True
    device = None

    def wait_for_everyone(self) -> None:
        pass


def process_state():
    """accelerate's PartialState under ``accelerate launch`` (WORLD_SIZE > 1), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        try:
            import torch
            from accelerate import PartialState
        except ImportError as err:  # pragma: no cover - a declared dependency
            raise PinError("WORLD_SIZE > 1 needs the accelerate package") from err
        # without cpu=True, accelerate sets up no process group on a machine without a GPU: every
        # process would then think it is the only one and make (and delete) every file itself
        state = PartialState(cpu=not torch.cuda.is_available())
        if state.num_processes != world:
            raise PinError(f"accelerate set up {state.num_processes} process(es) for WORLD_SIZE={world}: "
                           "each would make every picture; check the accelerate launch configuration")
        return state
    return _LocalState()


def _sum_over_processes(state, counts: tuple[int, ...]) -> tuple[int, ...]:
    if state.num_processes == 1:
        return counts
    gather = getattr(state, "gather_object", None)
    if gather is None:
        from accelerate.utils import gather_object as gather
    every = gather([tuple(counts)])
    return tuple(sum(c[i] for c in every) for i in range(len(counts)))


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def encode_png(image: Image.Image, job: Job, mask_area_frac: float, backend: str) -> bytes:
    """PNG bytes carrying their own manifest fields (so a resumed run can rebuild the manifest)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("pin:category", job.category.name)
    info.add_text("pin:index", str(job.index))
    info.add_text("pin:seed", str(job.seed))
    info.add_text("pin:prompt", job.prompt)
    info.add_text("pin:mask_area_frac", repr(float(mask_area_frac)))
    info.add_text("pin:backend", backend)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _skip_marker(png: Path) -> Path:
    return png.with_suffix(".skip")


def _done(out_dir: Path, job: Job) -> bool:
    png = out_dir / job.rel_path
    return png.exists() or _skip_marker(png).exists()


def _chunks(jobs: Sequence[Job], size: int) -> Iterable[list[Job]]:
    """Fixed chunks of one category's indices (0..size-1, size..2*size-1, ...): a batch is the
    same in every run and process, whatever was made before."""
    chunk: list[Job] = []
    for job in jobs:
        if chunk and (job.category != chunk[0].category or job.index // size != chunk[0].index // size):
            yield chunk
            chunk = []
        chunk.append(job)
    if chunk:
        yield chunk


def run_jobs(jobs: Sequence[Job], backend: Generator, out_dir: Path, progress: bool = True) -> tuple[int, int, int]:
    """Make the missing pictures of ``jobs``; returns (made, reused, skipped)."""
    from pin.progress import tqdm

    made = reused = skipped = 0
    bar = tqdm(total=len(jobs), desc=f"generate/{backend.name}", unit="img", disable=not progress,
               mininterval=1.0, dynamic_ncols=True)
    try:
        for chunk in _chunks(jobs, max(1, backend.batch_size)):
            todo = [j for j in chunk if not _done(out_dir, j)]
            reused += len(chunk) - len(todo)
            if todo:
                # render the whole chunk (same batch as a fresh run), keep the missing ones
                results = backend.render(chunk)
                if len(results) != len(chunk):
                    raise PinError(f"backend {backend.name} returned {len(results)} pictures for {len(chunk)} jobs")
                for job, res in zip(chunk, results):
                    if job not in todo:
                        continue
                    png = out_dir / job.rel_path
                    if res.image is None:
                        atomic_write_bytes(_skip_marker(png), b"")
                        skipped += 1
                    else:
                        atomic_write_bytes(png, encode_png(res.image, job, res.mask_area_frac, backend.name))
                        made += 1
            bar.update(len(chunk))
    finally:
        bar.close()
    return made, reused, skipped


def collect_manifest(jobs: Sequence[Job], out_dir: Path, backend: str):
    """The manifest rows of every finished picture, read back from the PNGs; also returns the
    number of rejected jobs. A job with neither picture nor marker is an error."""
    import pandas as pd

    rows, skipped, missing = [], 0, []
    for job in jobs:
        png = out_dir / job.rel_path
        if not png.exists():
            if _skip_marker(png).exists():
                skipped += 1
            else:
                missing.append(job.rel_path)
            continue
        try:
            with Image.open(png) as im:
                width, height = im.size
                meta = dict(im.text)  # reads every chunk: a truncated or damaged file fails here
        except (OSError, ValueError, SyntaxError) as err:
            raise PinError(f"{png}: damaged picture ({type(err).__name__}: {err}); delete it and rerun "
                           "to make it again") from None
        try:
            area = float(meta["pin:mask_area_frac"])
        except (KeyError, ValueError):
            raise PinError(f"{png}: no pin:mask_area_frac in the PNG; delete it and rerun") from None
        rows.append({
            "category": job.category.name, "split": job.split, "index": job.index,
            "path": job.rel_path, "seed": job.seed, "prompt": job.prompt,
            "width": width, "height": height, "mask_area_frac": area, "backend": backend,
        })
    if missing:
        raise PinError(f"{len(missing)} pictures are missing after generation (first: {missing[0]}); rerun to resume")
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    df = df.astype({"index": "int64", "seed": "int64", "width": "int64", "height": "int64",
                    "mask_area_frac": "float64"})
    return df, skipped


def write_manifest(df, path: Path) -> None:
    tmp = tmp_path_for(path)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Entry
# ----------------------------------------------------------------------------------------------
def make_backend(params: GenerateParams, state=None) -> Generator:
    if params.backend == "openmoji":
        from pin.synth.emoji import OpenMojiGenerator

        return OpenMojiGenerator(params.category_set, params.image_size)
    if params.backend == "diffusers":
        from pin.synth.diffusers_backend import DiffusersGenerator

        return DiffusersGenerator(params, device=getattr(state, "device", None))
    if params.backend == "shapes":
        from pin.synth.shapes import ShapesGenerator

        return ShapesGenerator(params.image_size)
    raise PinError(f"unknown generate.backend {params.backend!r}")


def run_config(params: GenerateParams, backend: Generator) -> dict:
    import PIL

    return {"params": params.model_dump(), "backend": backend.config(),
            "generator_version": GENERATOR_VERSION, "pillow": PIL.__version__}


def run_generate(
    params: GenerateParams,
    out_dir: str | Path = "data/objects",
    backend: Generator | None = None,
    progress: bool = True,
    state=None,
    shard: tuple[int, int] | None = None,
) -> GenerateResult:
    """Make (or finish) the pictures and the manifest for ``params``; see the module docstring.
    ``shard`` = (i, K): only shard i of K, in ``out_dir`` (a folder of its own)."""
    out_dir = Path(out_dir)
    state = state or process_state()
    backend = backend or make_backend(params, state)

    if hasattr(backend, "categories"):  # a backend that is its own category set (shapes)
        chosen = backend.categories(params.max_categories)
    else:
        chosen = select_categories(load_set(params.category_set), backend.covers, params.max_categories)
    if not chosen:
        raise PinError(
            f"no category of generate.category_set={params.category_set!r} can be made by the "
            f"{backend.name} backend" + (" within max_categories" if params.max_categories else ""))
    splits = {s for _, s in chosen}
    if params.category_set == "lvis" and splits != {"train", "heldout"}:
        lacking = ({"train", "heldout"} - splits).pop()
        raise PinError(f"the {backend.name} backend covers no {lacking} category of LVIS; both splits are needed")
    config = run_config(params, backend)
    if shard is not None:  # after the check above: one shard may hold one split only
        chosen = chosen[shard[0]::shard[1]]
        splits = {s for _, s in chosen}
        config = {**config, "shard": list(shard)}

    if state.is_main_process:
        prepare_resumable_dir(out_dir, config)
        remove_temp_files(out_dir)  # what a killed run was writing: never read, never kept
    state.wait_for_everyone()

    mine = chosen[state.process_index::state.num_processes]
    made, reused, skipped = run_jobs(plan_jobs(mine, backend, params), backend, out_dir,
                                     progress=progress and state.is_main_process)
    state.wait_for_everyone()
    made, reused, skipped = _sum_over_processes(state, (made, reused, skipped))

    result = GenerateResult(
        set_name=params.category_set, backend=backend.name,
        categories={s: sum(1 for _, sp in chosen if sp == s) for s in sorted(splits)},
        images=0, made=made, reused=reused, skipped=skipped)
    if state.is_main_process:
        df, skipped_all = collect_manifest(plan_jobs(chosen, backend, params), out_dir, backend.name)
        write_manifest(df, out_dir / MANIFEST)
        result.images = len(df)
        result.skipped = skipped_all
        result.manifest = out_dir / MANIFEST
        result.per_split_images = df["split"].value_counts().to_dict()
    state.wait_for_everyone()
    return result
