"""Higher resolution for real (paper Tab. 3): at an encoder input above the 224 frame, the pixels
that reach the encoder carry that resolution - evaluation squashes each picture to the encoder's
input, not to 224 and back up - and training refuses composites smaller than the encoder's input."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from pin.composed import ComposedImage, ComposedObject  # noqa: E402
from pin.errors import PinError  # noqa: E402
from pin.eval.incontext import context_features  # noqa: E402
from pin.eval.query import Query  # noqa: E402
from pin.eval.run import query_features  # noqa: E402
from pin.vlm.resolution import resized_processor  # noqa: E402

SIDE = 448


def checkerboard(side: int = SIDE) -> Image.Image:
    """Black and white 1-px squares: a 224-px intermediate averages them to flat grey."""
    i = np.indices((side, side)).sum(0) % 2
    return Image.fromarray((i * 255).astype(np.uint8)).convert("RGB")


class RecordingVLM:
    """A stand-in FrozenVLM at 448 px: open_clip's eval transform (as the OpenFlamingo adapter's
    ``set_image_size`` builds it); it keeps the pixel tensors that reach the encoder."""

    name = "recording"
    device = torch.device("cpu")
    input_size = SIDE

    def __init__(self):
        import open_clip

        base = open_clip.image_transform(224, is_train=False)
        self.transform = resized_processor(base, SIDE)
        self.seen: list[torch.Tensor] = []

    def preprocess(self, images):
        return torch.stack([self.transform(im) for im in images])

    def patch_features(self, pixels):
        self.seen.append(pixels)
        return torch.zeros(len(pixels), 1, 1)


def contrast(pixels: torch.Tensor) -> float:
    """Mean absolute difference between horizontal neighbours (normalised units)."""
    return float((pixels[..., 1:] - pixels[..., :-1]).abs().mean())


def test_checkerboard_keeps_its_contrast_at_the_encoder_input_at_448(tmp_path):
    path = tmp_path / "board.png"
    checkerboard().save(path)
    query = Query("synthetic", "1:1", 1, path, (SIDE, SIDE), "board", "board", 1, (0, 0, 224, 224), 1)
    vlm = RecordingVLM()
    query_features(vlm, [query], batch_size=1)
    (pixels,) = vlm.seen
    assert pixels.shape == (1, 3, SIDE, SIDE)
    flat = contrast(vlm.preprocess([Image.new("RGB", (SIDE, SIDE), (128, 128, 128))]))
    # black/white neighbours are ~4 normalised units apart; through a 224-px frame they blur to ~0
    assert contrast(pixels) > 3.0 and flat < 1e-3

    buf = io.BytesIO()
    checkerboard().save(buf, format="PNG")
    obj = ComposedObject("board", (0, 0, SIDE, SIDE), (0, 0, 8, 8), "board")
    vlm.seen.clear()
    context_features(vlm, [ComposedImage(0, buf.getvalue(), SIDE, SIDE, (obj,))], [(0, 0)])  # in-context shots
    assert contrast(vlm.seen[0]) > 3.0


def _split(folder, side: int, n: int = 4) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (side, side), (40 * i, 90, 160)).save(buf, format="PNG")
        rows.append({"image_id": i, "image": buf.getvalue(), "width": side, "height": side,
                     "objects": [{"category": "dog", "box": [0, 0, side // 2, side // 2], "grid_box": [0, 0, 4, 4],
                                  "referral": "dog"}]})
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-00000.parquet")


def test_training_refuses_composites_below_the_encoder_input(tmp_path):
    """compose.image_size 224 with vlm.image_size 448 would train on upsampled pictures: refused,
    naming both keys, before anything is written."""
    from pin.insert import InsertConfig, PositionalInsert
    from pin.methods.pin_method import PinMethod
    from pin.params import TrainParams
    from pin.train import run_train

    composed = tmp_path / "composed"
    _split(composed / "train", 224)
    _split(composed / "val", 224)
    method = PinMethod(PositionalInsert(InsertConfig(n_positions=1, width=1, layers=0)))
    with pytest.raises(PinError, match=r"compose\.image_size=224 .*vlm\.image_size=448"):
        run_train(TrainParams(steps=1, batch_size=2), RecordingVLM(), method, 8, composed_dir=str(composed),
                  out_dir=str(tmp_path / "pin"), metrics_path=str(tmp_path / "train.json"),
                  live_dir=str(tmp_path / "live"), timing_path=None)
    assert not (tmp_path / "pin").exists() and not (tmp_path / "train.json").exists()
