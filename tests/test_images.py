"""pin.images.open_image: the one reader of pictures we did not write (locate, evaluation,
compose backgrounds, generated objects)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pin.images import ImageError, open_image

GREY = (np.arange(48 * 40).reshape(40, 48) * 7 % 256).astype(np.uint8)  # a ramp with every level


def _as(mode: str) -> Image.Image:
    """GREY in ``mode``, each value where a viewer would show it."""
    if mode == "I;16":
        return Image.fromarray(GREY.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(GREY.astype(np.int32) * 257)  # 16-bit range in a 32-bit image
    if mode == "F":
        return Image.fromarray(GREY.astype(np.float32) / 255)
    return Image.fromarray(GREY, "L").convert(mode)


@pytest.mark.parametrize("mode, ext", [("L", "png"), ("LA", "png"), ("P", "png"), ("I;16", "png"),
                                       ("I", "tiff"), ("F", "tiff"), ("CMYK", "tiff"), ("RGBA", "png"),
                                       ("RGB", "png")])
def test_every_mode_reads_as_the_grey_a_viewer_shows(tmp_path, mode, ext):
    path = tmp_path / f"pic.{ext}"
    _as(mode).save(path)
    assert Image.open(path).mode.startswith(mode[:1])  # the file really holds that mode
    rgb = np.asarray(open_image(path)).astype(int)
    assert rgb.shape == (40, 48, 3)
    assert np.abs(rgb - GREY[..., None]).max() == 0


def test_a_16bit_photo_is_not_white(tmp_path):
    # the reproduction: convert("RGB") clips I;16 at 255 (99% white)
    Image.fromarray(GREY.astype(np.uint16) * 257).save(tmp_path / "png16.png")
    clipped = np.asarray(Image.open(tmp_path / "png16.png").convert("RGB"))
    assert (clipped == 255).mean() > 0.9
    assert np.asarray(open_image(tmp_path / "png16.png")).mean() == pytest.approx(GREY.mean(), abs=0.5)


def test_mode_1_is_black_and_white(tmp_path):
    Image.fromarray(GREY > 127).save(tmp_path / "bw.png")
    rgb = np.asarray(open_image(tmp_path / "bw.png"))
    assert set(np.unique(rgb)) == {0, 255}
    assert ((rgb[..., 0] == 255) == (GREY > 127)).all()


def test_transparency_is_laid_on_white_for_rgb_and_kept_for_rgba(tmp_path):
    im = Image.new("RGBA", (8, 8), (10, 20, 30, 0))  # fully transparent, dark colour underneath
    im.putpixel((0, 0), (10, 20, 30, 255))
    im.save(tmp_path / "a.png")
    rgb = np.asarray(open_image(tmp_path / "a.png"))
    assert tuple(rgb[0, 0]) == (10, 20, 30) and tuple(rgb[4, 4]) == (255, 255, 255)
    assert open_image(tmp_path / "a.png", "RGBA").getpixel((4, 4))[3] == 0


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    im.save(tmp_path / "phone.jpg", exif=exif)
    assert open_image(tmp_path / "phone.jpg").size == (20, 40)
    assert open_image(tmp_path / "phone.jpg", upright=False).size == (40, 20)


def _jpeg(path, size=(200, 150)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


@pytest.mark.parametrize("draft", [None, 32])
def test_a_truncated_file_whose_header_reads_is_an_error_naming_it(tmp_path, draft):
    _jpeg(tmp_path / "t.jpg")
    raw = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(raw[: len(raw) * 2 // 3])
    Image.open(tmp_path / "t.jpg").size  # the header alone still reads
    with pytest.raises(ImageError, match=r"t\.jpg: cannot decode the image \(OSError: image file is truncated"):
        open_image(tmp_path / "t.jpg", draft=draft)


@pytest.mark.parametrize("content, why", [(b"", "not an image file"), (b"hello", "not an image file"),
                                          (None, "no such image file")])
def test_not_an_image(tmp_path, content, why):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=f"x.png: {why}"):
        open_image(path)


def test_decompression_bomb_is_refused_from_the_header(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr("pin.images.MAX_PIXELS", 9_999)
    with pytest.raises(ImageError, match=r"big\.png: over the 9,999-pixel limit \(a decompression bomb, or a picture to shrink first; "
                                         r"100x100 = 10,000 pixels\)"):
        open_image(tmp_path / "big.png")


def test_every_reader_uses_it(tmp_path):
    """locate, evaluation, compose backgrounds and generated objects all see the 16-bit grey."""
    from pin.eval.query import Query
    from pin.locate import open_image as locate_open
    from pin.synth.backgrounds import BackgroundBank, scan_backgrounds
    from pin.synth.objects import read_object

    (tmp_path / "bg").mkdir()
    Image.fromarray(np.full((64, 64), 100 * 257, np.uint16)).save(tmp_path / "bg/g16.png")
    want = 100
    assert np.asarray(locate_open(tmp_path / "bg/g16.png")).max() == want
    q = Query("coco", "1:1", 1, tmp_path / "bg/g16.png", (64, 64), "dog", "dog", 1, (0, 0, 9, 9), 1)
    assert np.asarray(q.load_image()).max() == want
    bank = BackgroundBank(scan_backgrounds(str(tmp_path / "bg"), size=32), 32)
    arr, bg_id, failures = bank.sample(np.random.default_rng(0))
    assert (bg_id, failures, int(arr.max())) == ("file:g16.png", 0, want)
    assert np.asarray(read_object(tmp_path / "bg/g16.png"))[..., 0].max() == want


def test_truncated_backgrounds_count_as_unreadable(tmp_path):
    from pin.synth.backgrounds import scan_backgrounds

    for i in range(3):
        _jpeg(tmp_path / f"{i}.jpg")
    raw = (tmp_path / "2.jpg").read_bytes()
    (tmp_path / "2.jpg").write_bytes(raw[: len(raw) // 2])
    src = scan_backgrounds(str(tmp_path), size=32)
    assert (src.files, src.unreadable) == (("0.jpg", "1.jpg"), ("2.jpg",))
    assert src.describe()["skipped_unreadable"] == 1


def test_evaluation_reads_pictures_as_stored(tmp_path):
    """Dataset boxes (COCO's) are in the stored pixels' frame: no EXIF turn there; pin locate,
    which answers in the picture as seen, turns it."""
    from pin.eval.query import Query
    from pin.locate import open_image as locate_open

    im = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "phone.jpg", exif=exif)
    q = Query("coco", "1:1", 1, tmp_path / "phone.jpg", (40, 20), "dog", "dog", 1, (0, 0, 9, 9), 1)
    assert q.load_image().size == (40, 20) and locate_open(tmp_path / "phone.jpg").size == (20, 40)
