"""Chapter 06's draw/upload widget, without a browser: real server, real trained model.

The widget only turns clicks into calls of predict_drawing / predict_upload, so
these tests drive those functions (and the widget's own handlers) with strokes,
rendered test digits and PNG/JPEG bytes, against a ModelServer serving a model
trained on real MNIST (the quick 1-epoch MLP of conftest.py, ~90% accurate).
"""

from __future__ import annotations

import datetime
import io
import shutil
import socket

import numpy as np
import pytest
from PIL import Image

from mnist_lib import data, paths
from mnist_lib.digit_widget import (CANVAS_SIZE, DigitWidget, predict_drawing, predict_upload,
                                    render_strokes)
from mnist_lib.images import ImageError
from mnist_lib.predict import InvalidInputError

# A "1": one stroke down the middle of the pad, as a mouse would draw it (many points).
ONE = [[(100 + 3 * np.sin(t / 5), 30 + t) for t in range(0, 141, 4)]]


@pytest.fixture(scope="module")
def server(exported_model, tmp_path_factory):
    from mnist_lib.serving import ModelServer

    base = tmp_path_factory.mktemp("serving") / "mnist"
    shutil.copytree(exported_model, base / "1")
    with ModelServer(base, rest_api_port=None) as running:
        yield running
    with socket.socket() as probe:  # nothing survives: the port is closed again
        assert probe.connect_ex(("127.0.0.1", running.grpc_port)) != 0


@pytest.fixture()
def client(server):
    with server.client() as connected:
        yield connected


def png_bytes(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def test_render_strokes_draws_white_round_lines_on_black():
    pixels = render_strokes(ONE)
    assert pixels.shape == (CANVAS_SIZE, CANVAS_SIZE) and pixels.dtype == np.uint8
    assert pixels[0, 0] == 0 and pixels[100, 100] == 255
    # round pen: the dot at the start reaches above the first point by half the width
    assert pixels[30 - 6, 100] == 255 and pixels[30 - 12, 100] == 0


def test_a_drawn_one_is_a_one(client):
    answer = predict_drawing(client, ONE)
    assert answer.image.shape == (28, 28) and answer.image.max() == pytest.approx(1.0)
    assert answer.digit == 1, answer.prediction.probabilities
    assert answer.prediction.model_version == 1
    assert answer.summary().startswith("drawing: 1 (probability")


def test_test_digits_drawn_big_go_through_the_same_path(client):
    """Test digits, scaled up to the pad's size, are read about as well as the raw 28x28 ones."""
    images, labels = data.load_numpy("test")
    images, labels = images[:60], labels[:60]
    big = [np.asarray(Image.fromarray(im).resize((CANVAS_SIZE, CANVAS_SIZE), Image.Resampling.BILINEAR))
           for im in images]
    drawn = np.array([predict_drawing(client, b).digit for b in big])
    raw = np.array([p.digit for p in client.predict(images / 255.0)])
    assert (drawn == labels).mean() >= 0.8
    assert (drawn == labels).mean() >= (raw == labels).mean() - 0.1


def test_uploaded_png_and_dark_on_light_jpeg(client):
    right = 0
    for digit in range(10):
        pixels = np.asarray(Image.open(paths.digits_dir() / f"{digit}.png").convert("L"))
        png = predict_upload(client, png_bytes(pixels), f"{digit}.png")
        # The same digit as a photo of paper would be: dark ink on light, bigger, JPEG.
        paper = 255 - np.asarray(Image.fromarray(pixels).resize((150, 150), Image.Resampling.BILINEAR))
        jpeg = predict_upload(client, png_bytes(paper, "JPEG"), f"{digit}.jpg")
        assert jpeg.image.max() == pytest.approx(1.0) and jpeg.image[0, 0] == 0  # white on black again
        right += (png.digit == digit) + (jpeg.digit == digit)
    assert right >= 16, f"only {right} of 20 uploads read correctly"


def test_refusals_say_what_is_wrong(client):
    with pytest.raises(ImageError, match="nothing drawn"):
        predict_drawing(client, [])
    with pytest.raises(ImageError, match="cannot read image"):
        predict_upload(client, b"not an image")
    with pytest.raises(ImageError, match="blank"):
        predict_drawing(client, np.zeros((50, 50)))
    with pytest.raises(InvalidInputError):  # a 0-255 "prepared" image never reaches the model
        client.predict(np.full((28, 28), 255.0))


def test_the_widget_draws_predicts_and_uploads(client):
    widget = DigitWidget(client)
    # The pen: down, moves, up -> a prediction, as in the browser.
    widget._pen_down(*ONE[0][0])
    for point in ONE[0][1:]:
        widget._pen_move(*point)
    widget._pen_up(*ONE[0][-1])
    assert widget.last_answer is not None and widget.last_answer.digit == 1
    assert widget.status.value.startswith("drawing: 1")
    assert len(widget.output.outputs) == 1  # the figure, shown once
    assert "image/png" in widget.output.outputs[0]["data"]
    # Moving without the button pressed draws nothing.
    widget._pen_move(10, 10)
    assert len(widget.strokes) == 1 and len(widget.strokes[0]) == len(ONE[0])

    widget.clear()
    assert widget.strokes == [] and widget.predict_drawing() is None
    assert "nothing drawn" in widget.status.value

    # An upload, as the browser delivers it (ipywidgets 8: a tuple of dicts).
    content = (paths.digits_dir() / "7.png").read_bytes()
    widget.upload.value = ({"name": "7.png", "type": "image/png", "size": len(content),
                            "content": memoryview(content),
                            "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert widget.last_answer.source == "7.png" and widget.last_answer.digit == 7
    assert widget.upload.value == ()  # cleared, so the same file can be sent again
    widget.upload.value = ({"name": "bad.png", "type": "image/png", "size": 3, "content": memoryview(b"bad"),
                            "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert widget.last_error and "cannot read image" in widget.status.value
    widget.close()


def test_the_widget_asks_the_version_its_client_names(server):
    from mnist_lib.predict import PredictionClient

    with PredictionClient(server.host, server.grpc_port, version=7) as missing:
        widget = DigitWidget(missing)
        widget.strokes = [list(s) for s in ONE]
        assert widget.predict_drawing() is None
        assert "does not serve model 'mnist' (version 7)" in widget.status.value
        widget.close()
