"""The ``eval`` section of params.yaml: which data sets, where they are, and the protocol."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from pin.params_base import Section


class CocoPaths(Section):
    """A COCO-format annotation file (COCO, LVIS, our synthetic set) and the image folder."""

    annotations: str | None = None
    images: str | None = None  # LVIS: a folder of all images, or the COCO root with train2017/, val2017/


class VocPaths(Section):
    root: str | None = None  # the VOC2007 folder: Annotations/, JPEGImages/, ImageSets/Main/<split>.txt
    split: Literal["test", "val", "train", "trainval"] = "test"  # paper: VOC2007 test


class RefCocoPaths(Section):
    refs: str | None = None  # refs(unc).p
    annotations: str | None = None  # instances.json
    images: str | None = None  # COCO train2014 images
    split: Literal["val", "testA", "testB"] = "testA"
    # last: one query per ref, its last expression (the authors' choice behind Tab. 2);
    # all: one query per expression (the usual protocol); first: the first expression
    sentences: Literal["last", "all", "first"] = "last"


class EvalPaths(Section):
    synthetic: CocoPaths = CocoPaths(
        annotations="data/composed/heldout/annotations.json", images="data/composed/heldout/images"
    )
    coco: CocoPaths = CocoPaths()
    lvis: CocoPaths = CocoPaths()
    pvoc: VocPaths = VocPaths()
    refcoco: RefCocoPaths = RefCocoPaths()


class EvalParams(Section):
    datasets: list[Literal["synthetic", "coco", "lvis", "pvoc", "refcoco"]] = ["synthetic"]
    paths: EvalPaths = EvalPaths()
    max_objects: int = Field(3, ge=1)  # paper, Sec. 5: images with up to 3 objects
    # what the max_objects rule counts: every annotation (the authors: crowd/difficult included,
    # though never queried) or only the objects that become queries
    count: Literal["annotations", "queries"] = "annotations"
    max_queries: int | None = Field(None, ge=1)  # deterministic subsample (seed) for quick runs
    max_missing: float = Field(0.01, ge=0, le=1)  # fail if more of the selected images are absent
    batch_size: int = Field(64, ge=1)
    num_beams: int = Field(1, ge=1)
    random_draws: int = Field(10, ge=1)  # paper: random baselines averaged over 10 runs
    gallery_size: int = Field(16, ge=0)
    seed: int = 0
    processes: int = Field(1, ge=1, exclude=True)  # > 1: under `accelerate launch` (pin.launch)
