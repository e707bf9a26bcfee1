"""Turn any picture of a digit into what the model expects, the way MNIST was made.

The model has only ever seen MNIST: 28x28, white digit on black, the digit
scaled to fit a 20x20 box and centred by its centre of mass. A photo of a digit
on paper (dark on light, any size, colour, off-centre) looks nothing like
that, and the model answers confidently wrong. :func:`prepare_image` repeats
NIST's recipe (LeCun et al.) on any image:

1. greyscale (transparent pixels are laid on a background that contrasts with the ink),
2. invert if the background is light, so the digit is bright on black,
3. stretch so the background is 0 and the brightest stroke is 1,
4. crop to the digit's bounding box,
5. resize so the longer side is 20 pixels, keeping the aspect ratio (anti-aliased),
6. paste into 28x28 so the centre of mass lands in the middle,
7. values 0..1, float32.

Also here: :func:`load_digits`, the ten example PNGs in ``data/digits``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_lib import paths
from mnist_lib.constants import IMAGE_SIZE, NUM_CLASSES

DIGIT_BOX = 20  # MNIST's digits fit in a 20x20 box inside its 28x28 canvas
# After stretching to 0..1, what counts as ink when finding the bounding box:
# low enough to keep faint anti-aliased edges, high enough to ignore paper texture.
INK_THRESHOLD = 0.2


class ImageError(ValueError):
    """An image that cannot be read, or holds no digit."""


def _open(image: Any) -> Image.Image:
    """A PIL image from a path, raw bytes (an upload widget's content), or a PIL image."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        source, name = io.BytesIO(bytes(image)), f"({len(image)} bytes given)"
    else:
        source, name = Path(image), f"'{image}'"
        if not source.is_file():
            raise ImageError(f"cannot read image {name}: no such file")
    try:
        opened = Image.open(source)
        opened.load()
        # Phones store photos sideways plus an EXIF "rotate me" flag.
        return ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as error:
        raise ImageError(f"cannot read image {name}: not a PNG/JPEG image this can decode "
                         f"({type(error).__name__}: {error})") from None


def _to_grey(image: Image.Image) -> np.ndarray:
    """Greyscale 0..255 float; transparency is flattened onto a background contrasting with the ink.

    Drawing widgets often give ink on a transparent background: plain
    conversion would turn white ink on transparent black into a blank image.
    """
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        grey_rgb = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        ink = grey_rgb[alpha[..., 0] > 0.5]
        if ink.size and alpha.min() < 0.5:  # partly transparent: lay it on a contrasting colour
            background = 255.0 if np.median(ink) < 128 else 0.0
        else:
            background = 255.0
        return grey_rgb * alpha[..., 0] + background * (1 - alpha[..., 0])
    return np.asarray(image.convert("L"), dtype=np.float32)


def _array_to_grey(array: np.ndarray) -> np.ndarray:
    """Numpy input: 2-D grey or 3-D RGB(A); 0..1 floats or 0..255 values."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.float32)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        mode = "RGBA" if array.shape[-1] == 4 else "RGB"
        scaled = array * 255.0 if array.dtype.kind == "f" and array.max() <= 1.0 else array
        return _to_grey(Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode))
    if array.ndim != 2:
        raise ImageError(f"expected a 2-D greyscale or 3-D RGB(A) image array, got shape {array.shape}")
    grey = array.astype(np.float32)
    if not np.isfinite(grey).all():
        raise ImageError("the image array contains NaN or infinite values")
    if array.dtype.kind == "f" and grey.max() <= 1.0:
        grey = grey * 255.0
    return grey


def prepare_image(image: Any) -> np.ndarray:
    """Any image of one digit -> float32 ``[28, 28]`` in 0..1, white on black, centred like MNIST.

    ``image``: a file path (PNG, JPEG, ...), the file's bytes, a PIL image, or a
    numpy array (greyscale or RGB(A), 0..255 or 0..1). Dark-on-light images are
    inverted. Raises :class:`ImageError` for unreadable or blank images.
    """
    if isinstance(image, np.ndarray):
        grey = _array_to_grey(image)
    else:
        grey = _to_grey(_open(image))
    if grey.size == 0:
        raise ImageError("the image is empty (0 pixels)")

    # 2. Background = the typical border colour: a digit rarely touches the edge.
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 127:
        grey = 255.0 - grey
        border = 255.0 - border

    # 3. Background to 0, brightest ink to 1.
    background = float(np.median(border))
    peak = float(grey.max())
    if peak - background < 1e-3 * 255:
        raise ImageError("the image is blank: no digit found (one colour everywhere)")
    ink = np.clip((grey - background) / (peak - background), 0.0, 1.0)
    ink[ink < INK_THRESHOLD / 2] = 0.0  # paper texture and JPEG noise would move the centre of mass

    # 4. Crop to the digit.
    rows = np.flatnonzero((ink >= INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink >= INK_THRESHOLD).any(axis=0))
    digit = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]

    # 5. Longer side to 20 pixels, aspect ratio kept, anti-aliased.
    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(digit.astype(np.float32), mode="F")
                         .resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    resized = np.clip(resized, 0.0, 1.0)  # Lanczos overshoots a little at sharp edges

    # 6. Centre of mass to the middle of the 28x28 canvas.
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    mass = resized.sum()
    ys, xs = np.indices(resized.shape)
    centre_y = (ys * resized).sum() / mass if mass else resized.shape[0] / 2
    centre_x = (xs * resized).sum() / mass if mass else resized.shape[1] / 2
    # MNIST's own digits have their centre of mass at index (14, 14), measured this same way.
    top = int(round(IMAGE_SIZE / 2 - centre_y))
    left = int(round(IMAGE_SIZE / 2 - centre_x))
    _paste(canvas, resized, top, left)

    # 7. Scaled so the brightest pixel is 1, as MNIST's strokes are.
    return canvas / max(float(canvas.max()), 1e-6)


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """Copy ``patch`` into ``canvas`` at (top, left), clipping whatever falls outside."""
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(top + patch.shape[0], canvas.shape[0])
    x1 = min(left + patch.shape[1], canvas.shape[1])
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]


def load_digit(digit: int) -> np.ndarray:
    """``data/digits/<digit>.png`` (a 28x28 MNIST test digit) as float32 ``[28, 28]`` in 0..1."""
    path = paths.digits_dir() / f"{int(digit)}.png"
    if not path.is_file():
        raise ImageError(f"{path} is missing: the course ships data/digits/0.png ... 9.png")
    return np.asarray(_open(path).convert("L"), dtype=np.float32) / 255.0


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The ten example digits: ``(images float32 [10, 28, 28] in 0..1, labels int64 [10])``."""
    labels = np.arange(NUM_CLASSES, dtype=np.int64)
    return np.stack([load_digit(d) for d in labels]), labels
