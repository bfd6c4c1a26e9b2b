"""Background images for the composition function.

``compose.backgrounds``:

* ``builtin`` (offline default): the real photographs that ship inside scikit-image (loaded
  from the package, never downloaded; 60% of the backgrounds) with random square crops (side
  1, 0.85, 0.7, 0.55 or 0.4 of the shorter side: each photo is pre-scaled once per crop scale, so
  a crop is a numpy slice), horizontal flips and saturation/contrast/brightness jitter, plus
  procedural textures (gradients, smooth noise, stripes, checkers, blobs; 40%). Ids:
  ``skimage:<name>`` and ``texture:<kind>:<seed>`` (the seed regenerates the texture exactly).
* ``white``: plain white backgrounds (paper App. B.3, Tab. 6 row (a): the ablation against
  BG-20k). Id: ``white``.
* a folder (BG-20k in the paper profile): every image file below it (recursive, sorted), with a
  random square crop and flip. Ids: ``file:<path relative to the folder>``. Every file is
  decoded once at scan time (:func:`pin.images.open_image`, at the JPEG draft scale: a truncated
  file whose header reads is caught here); those that fail are skipped and count against
  ``compose.max_corrupt``. A file that fails later anyway is skipped (another one is drawn) and
  counted per image.

Everything is drawn from the ``numpy.random.Generator`` passed in, so one image seed fixes its
background.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pin.errors import PinError
from pin.images import open_image

# The photographs that ship inside the scikit-image wheel (skimage.data.<name>() loads them with
# no download): name -> file in the skimage/data package folder. They are read straight from
# there (skimage.data.<name>() hashes the file on every call); the function is the fallback.
SKIMAGE_PHOTOS = {  # only photos whose scikit-image docstring states CC0 / public domain (NOTICE)
    "astronaut": "astronaut.png", "brick": "brick.png", "camera": "camera.png",
    "chelsea": "chelsea.png", "clock": "clock_motion.png", "coffee": "coffee.png",
    "coins": "coins.png", "grass": "grass.png", "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg", "immunohistochemistry": "ihc.png",
    "retina": "retina.jpg", "rocket": "rocket.jpg", "text": "text.png",
}
PHOTO_NAMES = tuple(SKIMAGE_PHOTOS)
TEXTURES = ("gradient", "noise", "stripes", "checker", "blobs")
PHOTO_PROB = 0.6  # builtin: share of photo backgrounds; the rest are procedural textures
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# builtin photos: random square crop whose side is one of these fractions of the shorter side
CROP_SCALES = (1.0, 0.85, 0.7, 0.55, 0.4)
MIN_CROP = 0.6  # folder images: crop side drawn from [MIN_CROP, 1] x the shorter side
MAX_DECODE_FAILURES = 50


@dataclass(frozen=True)
class BackgroundSource:
    """What ``compose.backgrounds`` resolved to; picklable, built once in the main process."""

    kind: str  # "builtin" | "white" | "folder"
    root: str = ""
    files: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = field(default=())

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.kind}\n{self.root}\n".encode())
        if self.kind == "folder":
            root = Path(self.root)
            for rel in self.files:
                h.update(f"{rel}\t{(root / rel).stat().st_size}\n".encode())
        elif self.kind == "builtin":
            import skimage

            h.update(f"skimage {skimage.__version__} {PHOTO_NAMES} {TEXTURES} {PHOTO_PROB} "
                     f"{CROP_SCALES}".encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        if self.kind == "builtin":
            return {"kind": "builtin", "photos": list(PHOTO_NAMES), "textures": list(TEXTURES),
                    "photo_share": PHOTO_PROB}
        if self.kind == "white":
            return {"kind": "white"}
        return {"kind": "folder", "root": self.root, "images": len(self.files),
                "skipped_unreadable": len(self.unreadable),
                "unreadable_examples": list(self.unreadable[:10])}


def scan_backgrounds(spec: str, param: str = "compose.backgrounds", size: int | None = None) -> BackgroundSource:
    """Resolve ``builtin``, ``white`` or a folder; a missing/empty folder is a PinError naming ``param``.
    Each file of a folder is decoded in full (at the JPEG draft scale for ``size``): those that
    fail are listed as unreadable."""
    if spec in ("builtin", "white"):
        return BackgroundSource(spec)
    root = Path(spec)
    if not root.is_dir():
        raise PinError(f"{param}={spec!r}: not 'builtin' or 'white' and no such folder")
    candidates = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS
    )
    files, bad = [], []
    for rel in candidates:
        try:
            open_image(root / rel, draft=size)
            files.append(rel)
        except PinError:  # open_image's ImageError: unreadable files are counted, not fatal
            bad.append(rel)
    if not files:
        raise PinError(
            f"{param}={spec!r}: no readable images in the folder "
            f"({len(bad)} unreadable, extensions {', '.join(IMAGE_EXTS)})"
        )
    return BackgroundSource("folder", str(root.resolve()), tuple(files), tuple(bad))


def _skimage_photo(name: str, min_side: int | None = None) -> Image.Image:
    """A scikit-image sample photo as an RGB PIL image (grayscale ones replicated to RGB);
    ``min_side`` lets JPEG decoding downscale in the DCT while keeping the shorter side >= it."""
    import skimage.data as data

    path = Path(data.__file__).parent / SKIMAGE_PHOTOS[name]
    try:
        with Image.open(path) as im:
            if min_side:
                im.draft("RGB", (min_side, min_side))
            return im.convert("RGB")
    except OSError:
        arr = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(arr[:, :, :3].astype(np.uint8)), "RGB")


def _colour(r: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in r.integers(0, 256, 3))


def _paletted(idx: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """uint8 index map + (n, 3) palette -> RGB array (the lookup runs in PIL's C code)."""
    im = Image.fromarray(np.ascontiguousarray(idx, dtype=np.uint8), "P")
    im.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    return np.asarray(im.convert("RGB"))


def make_texture(kind: str, seed: int, size: int) -> np.ndarray:
    """A procedural texture (size x size x 3 uint8), fully determined by (kind, seed, size)."""
    r = np.random.default_rng(seed)
    ax = (np.arange(size, dtype=np.float32) + 0.5) / np.float32(size)
    theta = r.uniform(0, 2 * np.pi)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    t = ax[None, :] * cos + ax[:, None] * sin  # coordinate along a random direction, (S, S)
    if kind == "gradient":
        c0, c1 = np.array(_colour(r), np.float64), np.array(_colour(r), np.float64)
        lo, hi = float(t.min()), float(t.max())
        scale = np.float32(255.0 / max(1e-6, hi - lo))
        idx = ((t - np.float32(lo)) * scale + np.float32(0.5)).astype(np.uint8)
        palette = c0[None, :] + np.linspace(0.0, 1.0, 256)[:, None] * (c1 - c0)[None, :]
        return _paletted(idx, np.clip(np.round(palette), 0, 255))
    if kind == "noise":
        k = int(r.integers(2, 12))
        low = r.integers(0, 256, (k, k, 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(low, "RGB").resize((size, size), Image.BICUBIC))
    if kind == "stripes":
        q = t * np.float32(1.0 / r.uniform(0.03, 0.3))
        idx = (q - np.floor(q)) < np.float32(r.uniform(0.3, 0.7))
        return _paletted(idx, np.array([_colour(r), _colour(r)]))
    if kind == "checker":
        inv = np.float32(1.0 / r.uniform(0.05, 0.35))
        v = -ax[None, :] * sin + ax[:, None] * cos
        idx = (np.floor(t * inv) + np.floor(v * inv)).astype(np.int32) & 1
        return _paletted(idx, np.array([_colour(r), _colour(r)]))
    if kind == "blobs":
        from PIL import ImageDraw

        canvas = Image.new("RGB", (size, size), _colour(r))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(r.integers(3, 12))):
            cx, cy = r.uniform(0, 1, 2) * size
            rx, ry = r.uniform(0.04, 0.35, 2) * size
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=_colour(r))
        return np.asarray(canvas)
    raise ValueError(f"unknown texture {kind!r}")


def _jitter(arr: np.ndarray, r: np.random.Generator) -> np.ndarray:
    """Saturation, contrast and brightness jitter as ONE affine colour matrix (applied by PIL in C).

    saturation s: f -> s f + (1 - s) gray(f); contrast c around the mean grey level m and
    brightness b: f -> b (c (f - m) + m). Saturation keeps gray(f), so m is the image's mean luma.
    """
    b, c, s = r.uniform(0.75, 1.25), r.uniform(0.75, 1.25), r.uniform(0.6, 1.4)
    w = np.array([0.299, 0.587, 0.114])
    m = float(w @ arr[::8, ::8].reshape(-1, 3).mean(axis=0))
    mat = b * c * (s * np.eye(3) + (1 - s) * np.outer(np.ones(3), w))
    offset = b * (1 - c) * m
    matrix = tuple(float(v) for row in mat for v in (*row, offset))
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr), "RGB").convert("RGB", matrix))


def _square_crop(im: Image.Image, size: int, r: np.random.Generator,
                 min_crop: float = MIN_CROP) -> Image.Image:
    """Random square crop (side drawn from [min_crop, 1] x the shorter side) resized to size, and
    a random horizontal flip."""
    w, h = im.size
    side = r.uniform(min_crop, 1.0) * min(w, h)
    x0 = r.uniform(0, w - side)
    y0 = r.uniform(0, h - side)
    out = im.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    if r.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


class BackgroundBank:
    """Draws backgrounds (size x size x 3 uint8) and their ids from a BackgroundSource."""

    def __init__(self, source: BackgroundSource, size: int):
        self.source = source
        self.size = size
        self._photos: dict[str, Image.Image] = {}
        self._levels: dict[tuple[str, int], np.ndarray] = {}
        self._bad: set[str] = set()

    def _level(self, name: str, level: int) -> np.ndarray:
        """The photo pre-scaled for crop scale CROP_SCALES[level] (built on first use): a random
        crop is then a numpy slice, no per-image resampling."""
        key = (name, level)
        if key not in self._levels:
            if name not in self._photos:
                base = math.ceil(self.size / min(CROP_SCALES))  # shorter side of the finest level
                photo = _skimage_photo(name, base)
                if min(photo.size) > base:
                    k = base / min(photo.size)
                    photo = photo.resize((round(photo.width * k), round(photo.height * k)), Image.BOX)
                self._photos[name] = photo
            photo = self._photos[name]
            w, h = photo.size
            k = self.size / (CROP_SCALES[level] * min(w, h))
            size = (max(self.size, round(w * k)), max(self.size, round(h * k)))
            self._levels[key] = np.asarray(photo.resize(size, Image.BOX if k < 1 else Image.BILINEAR))
        return self._levels[key]

    def _photo_crop(self, name: str, r: np.random.Generator) -> np.ndarray:
        level = self._level(name, int(r.integers(len(CROP_SCALES))))
        h, w = level.shape[:2]
        y0 = int(r.integers(0, h - self.size + 1))
        x0 = int(r.integers(0, w - self.size + 1))
        crop = level[y0:y0 + self.size, x0:x0 + self.size]
        if r.random() < 0.5:
            crop = crop[:, ::-1]
        return _jitter(crop, r)

    def sample(self, r: np.random.Generator) -> tuple[np.ndarray, str, int]:
        """Returns (background, id, decode failures met while drawing it)."""
        if self.source.kind == "white":
            return np.full((self.size, self.size, 3), 255, dtype=np.uint8), "white", 0
        if self.source.kind == "builtin":
            if r.random() < PHOTO_PROB:
                name = PHOTO_NAMES[int(r.integers(len(PHOTO_NAMES)))]
                return self._photo_crop(name, r), f"skimage:{name}", 0
            kind = TEXTURES[int(r.integers(len(TEXTURES)))]
            seed = int(r.integers(2**31))
            return make_texture(kind, seed, self.size), f"texture:{kind}:{seed}", 0
        files = self.source.files
        root = Path(self.source.root)
        for failures in range(MAX_DECODE_FAILURES):
            rel = files[int(r.integers(len(files)))]
            try:
                if rel in self._bad:
                    raise OSError("known unreadable")
                rgb = open_image(root / rel, draft=self.size)  # fast JPEG DCT downscale
                return np.asarray(_square_crop(rgb, self.size, r)), f"file:{rel}", failures
            except Exception:  # noqa: BLE001 - counted by the caller
                self._bad.add(rel)
        raise PinError(f"compose.backgrounds={self.source.root!r}: {MAX_DECODE_FAILURES} unreadable "
                       f"background images in a row")
