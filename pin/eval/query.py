"""One localisation query, and the mapping between original pixels and the 224 frame the model sees."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pin.frame import FRAME


@dataclass(frozen=True)
class Query:
    """One localisation query: find ``text`` in the image; the answer is scored against gt_box."""

    dataset: str
    query_id: str  # unique within the dataset
    image_id: int | str
    image_path: Path
    image_size: tuple[int, int]  # (W, H) of the original image
    text: str  # what the prompt asks for: readable category name or referring expression
    category: str  # readable category name
    category_id: int | str
    gt_box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels
    ann_id: int | str

    @property
    def gt_box_224(self) -> tuple[float, float, float, float]:
        """The ground truth in the frame the model sees: the image squashed to 224x224."""
        return to_frame(self.gt_box, self.image_size)

    def load_image(self):
        """The picture as RGB (:func:`pin.images.open_image`: 16-bit scaled, fully decoded); an
        ImageError (a PinError) naming the file when it cannot be used. As stored, not turned by
        its EXIF orientation: dataset boxes (COCO's among them) are in the stored pixels' frame."""
        from pin.images import open_image

        return open_image(self.image_path, upright=False)


def to_frame(box, size: tuple[float, float], frame: int = FRAME) -> tuple[float, float, float, float]:
    """Original pixels -> the ``frame`` x ``frame`` resize: x scaled by frame/W, y by frame/H."""
    sx, sy = frame / size[0], frame / size[1]
    x1, y1, x2, y2 = box
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def from_frame(box, size: tuple[float, float], frame: int = FRAME) -> tuple[float, float, float, float]:
    """Inverse of ``to_frame``: a box predicted in the 224 frame -> original pixels."""
    return to_frame(box, (frame * frame / size[0], frame * frame / size[1]), frame)
