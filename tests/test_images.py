"""Preparing user images the way MNIST was made, checked by a really trained model.

MNIST test digits are re-drawn in the styles people send (bigger, bolder,
thinner, dark on light, coloured, off-centre, small in a large noisy photo) and
must still be read correctly after :func:`prepare_image`.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mnist_lib.data import load_numpy
from mnist_lib.images import ImageError, load_digit, load_digits, prepare_image

SAMPLES = 300  # test digits per style
MIN_RATE = 0.90  # per style; the model alone scores ~97% on untouched digits


# ## The recipe on its own

def test_mnist_digits_come_back_almost_unchanged():
    """MNIST is already prepared: doing it again must be (nearly) the identity."""
    digits, _ = load_numpy("test", limit=200)
    original = digits / np.float32(255)
    prepared = np.stack([prepare_image(d) for d in digits])
    assert prepared.shape == (200, 28, 28) and prepared.dtype == np.float32
    assert prepared.min() >= 0 and prepared.max() == 1
    per_image = np.abs(prepared - original).mean(axis=(1, 2))
    assert np.median(per_image) < 0.01
    assert (per_image < 0.05).mean() > 0.95


def test_digit_is_fitted_and_centred_by_mass():
    canvas = np.zeros((300, 200), np.uint8)
    canvas[40:200, 150:170] = 255  # a tall bar far from the centre: "1"
    prepared = prepare_image(canvas)
    rows = np.flatnonzero(prepared.max(axis=1) > 0.5)
    assert 19 <= rows[-1] - rows[0] + 1 <= 21  # longer side fitted to 20 pixels
    ys, xs = np.indices(prepared.shape)
    mass = prepared.sum()
    assert abs((ys * prepared).sum() / mass - 14) <= 1
    assert abs((xs * prepared).sum() / mass - 14) <= 1


def test_same_answer_from_every_kind_of_input(tmp_path):
    digit = load_numpy("test", limit=1)[0][0]
    expected = prepare_image(digit)
    path = tmp_path / "digit.png"
    Image.fromarray(digit).save(path)
    np.testing.assert_allclose(prepare_image(path), expected, atol=1e-6)
    np.testing.assert_allclose(prepare_image(str(path)), expected, atol=1e-6)
    np.testing.assert_allclose(prepare_image(path.read_bytes()), expected, atol=1e-6)
    np.testing.assert_allclose(prepare_image(Image.open(path)), expected, atol=1e-6)
    np.testing.assert_allclose(prepare_image(digit / 255.0), expected, atol=1e-5)
    rgb = np.repeat(digit[:, :, np.newaxis], 3, axis=2)
    np.testing.assert_allclose(prepare_image(rgb), expected, atol=1e-2)


def test_transparent_drawings():
    """Drawing widgets give ink on transparent pixels, black or white ink."""
    digit = load_numpy("test", limit=1)[0][0]
    expected = prepare_image(digit)
    for ink in (0, 255):
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., :3] = ink
        rgba[..., 3] = digit  # the stroke is where it is opaque
        np.testing.assert_allclose(prepare_image(Image.fromarray(rgba, "RGBA")), expected, atol=0.02)


def test_unreadable_and_blank_images(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(ImageError, match="cannot read image .*bad.png.*not a PNG/JPEG"):
        prepare_image(bad)
    with pytest.raises(ImageError, match="no such file"):
        prepare_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="blank"):
        prepare_image(np.full((50, 50), 200, np.uint8))
    with pytest.raises(ImageError, match="shape"):
        prepare_image(np.zeros((2, 3, 5, 7)))


def test_the_course_example_digits():
    images, labels = load_digits()
    assert images.shape == (10, 28, 28) and labels.tolist() == list(range(10))
    assert 0 <= images.min() and images.max() <= 1 and images.max() > 0.9
    np.testing.assert_array_equal(load_digit(4), images[4])


# ## Styles people actually send, read by a model trained for real

def _upscale(digit: np.ndarray, factor: int) -> Image.Image:
    return Image.fromarray(digit).resize((28 * factor, 28 * factor), Image.Resampling.BICUBIC)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _large_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Dark ink, 5x, somewhere on a 400x300 light, noisy, JPEG-compressed sheet."""
    ink = np.asarray(_upscale(digit, 5), np.float32) / 255
    sheet = np.full((300, 400), 225.0) + rng.normal(0, 6, (300, 400))
    top, left = rng.integers(0, 300 - 140), rng.integers(0, 400 - 140)
    sheet[top:top + 140, left:left + 140] -= ink * 190
    return _jpeg(Image.fromarray(np.clip(sheet, 0, 255).astype(np.uint8)))


def _coloured(digit: np.ndarray) -> Image.Image:
    """Blue ink on yellowish paper, RGB."""
    ink = np.asarray(_upscale(digit, 2), np.float32)[..., np.newaxis] / 255
    paper, pen = np.array([250, 238, 190]), np.array([25, 40, 150])
    return Image.fromarray((paper * (1 - ink) + pen * ink).astype(np.uint8), "RGB")


def _off_centre(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((60, 60), np.uint8)
    top, left = rng.choice([0, 32], size=2)
    canvas[top:top + 28, left:left + 28] = digit
    return canvas


STYLES = {
    "as is": lambda d, rng: d,
    "rescaled (x3, bicubic)": lambda d, rng: _upscale(d, 3),
    "rescaled (0.75x)": lambda d, rng: Image.fromarray(d).resize((21, 21), Image.Resampling.LANCZOS),
    "thickened (max filter)": lambda d, rng: _upscale(d, 3).filter(ImageFilter.MaxFilter(5)),
    "thinned (min filter)": lambda d, rng: _upscale(d, 3).filter(ImageFilter.MinFilter(3)),
    "inverted, dark on light": lambda d, rng: Image.fromarray(255 - d).resize((56, 56)),
    "coloured RGB": lambda d, rng: _coloured(d),
    "shifted off-centre": _off_centre,
    "large noisy photo (JPEG)": _large_photo,
}


@pytest.fixture(scope="module")
def trained_model():
    """A small CNN trained for real, briefly: 20,000 images, 2 epochs (~97% on test)."""
    import keras

    from mnist_lib.model import build_model

    keras.utils.set_random_seed(7)
    images, labels = load_numpy("train", limit=20_000)
    model = build_model("cnn")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(images / np.float32(255), labels, epochs=2, batch_size=128, verbose=0)
    return model


@pytest.mark.slow
def test_styles_are_read_correctly(trained_model):
    digits, labels = load_numpy("test", limit=SAMPLES)
    rng = np.random.default_rng(0)
    baseline = (trained_model.predict(digits / np.float32(255), verbose=0).argmax(1) == labels).mean()
    rates = {}
    for style, render in STYLES.items():
        prepared = np.stack([prepare_image(render(d, rng)) for d in digits])
        predicted = trained_model.predict(prepared, verbose=0).argmax(axis=1)
        rates[style] = float((predicted == labels).mean())
    report = "\n".join(f"  {style:28s} {rate:6.1%}" for style, rate in rates.items())
    print(f"\nuntouched MNIST, no preparation: {baseline:.1%}\n{report}")
    assert baseline > 0.94
    failing = {style: rate for style, rate in rates.items() if rate < MIN_RATE}
    assert not failing, f"below {MIN_RATE:.0%}:\n{report}"


@pytest.mark.slow
def test_unprepared_styles_would_fail(trained_model):
    """Why the recipe matters: the same model on raw inverted digits is far worse."""
    digits, labels = load_numpy("test", limit=SAMPLES)
    raw = (255 - digits) / np.float32(255)
    raw_rate = (trained_model.predict(raw, verbose=0).argmax(1) == labels).mean()
    prepared = np.stack([prepare_image(d) for d in 255 - digits])
    prepared_rate = (trained_model.predict(prepared, verbose=0).argmax(1) == labels).mean()
    assert raw_rate < 0.5 < 0.9 < prepared_rate
