"""Draw or upload a digit and ask the model server what it is: chapter 06's widget.

The widget is a thin layer of buttons over two plain functions, so every step a
learner's click triggers can be tested without a browser:

- :func:`predict_drawing`: strokes (lists of ``(x, y)`` points, as the mouse
  drew them) or an image array -> the prepared 28x28 image and the server's answer;
- :func:`predict_upload`: the bytes of a PNG/JPEG file -> the same.

Both go through :func:`mnist_lib.images.prepare_image`, which makes any picture
look like MNIST (white on black, 20x20 digit centred in 28x28), and then through
the gRPC client, exactly as any other request. :class:`DigitWidget` puts a
drawing pad (`ipycanvas <https://ipycanvas.readthedocs.io>`_, a prebuilt
JupyterLab extension installed by pip: no server extension), a file upload and
an output area together.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas
from PIL import Image, ImageDraw

from mnist_lib.images import ImageError, prepare_image
from mnist_lib.predict import PredictError, Prediction, PredictionClient

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The pad: big enough to draw comfortably with a mouse. MNIST strokes are about
# 2-3 pixels wide in a 20-pixel digit, so a 16-pixel pen on a ~150-pixel digit
# gives the same proportions once prepare_image scales it down.
CANVAS_SIZE = 200
STROKE_WIDTH = 16

Point = tuple[float, float]
Strokes = Sequence[Sequence[Point]]


@dataclass
class DigitAnswer:
    """What the widget shows: the image as the model saw it, and the server's answer."""

    image: np.ndarray  # float32 [28, 28] in 0..1, white on black
    prediction: Prediction
    source: str = "drawing"

    @property
    def digit(self) -> int:
        return self.prediction.digit

    def summary(self) -> str:
        """One line: ``drawing: 1 (probability 0.98, version 2)``."""
        best = self.prediction.probabilities[self.digit]
        return (f"{self.source}: {self.digit} (probability {best:.2f}, "
                f"model version {self.prediction.model_version})")

    def figure(self) -> "Figure":
        """The prepared 28x28 image beside the ten probabilities (a closed Figure)."""
        from mnist_lib.plots import plot_probabilities  # (matplotlib: loaded when a figure is drawn)

        return plot_probabilities(self.image, self.prediction.probabilities,
                                  title=f"{self.source}: {self.digit}")


def render_strokes(strokes: Strokes, size: int = CANVAS_SIZE, width: int = STROKE_WIDTH) -> np.ndarray:
    """Draw strokes as the pad shows them: white round-ended lines on black, uint8 ``[size, size]``.

    The widget keeps the points the mouse went through rather than reading the
    browser's pixels back: the same strokes then give the same image in a test.
    """
    image = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(image)
    radius = width / 2
    for stroke in strokes:
        points = [(float(x), float(y)) for x, y in stroke]
        if len(points) > 1:
            pen.line(points, fill=255, width=width, joint="curve")
        for x, y in points:  # round ends and joints, as the canvas' lineCap "round"
            pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(image)


def predict_drawing(client: PredictionClient, drawing: Strokes | np.ndarray,
                    source: str = "drawing") -> DigitAnswer:
    """Prepare a drawing like MNIST and ask the server which digit it is.

    ``drawing``: strokes (a list of strokes, each a list of ``(x, y)`` points on
    the :data:`CANVAS_SIZE` pad) or an image array of any size (greyscale or RGB(A),
    light-on-dark or dark-on-light). Raises :class:`~mnist_lib.images.ImageError`
    for an empty drawing, :class:`~mnist_lib.predict.PredictError` if the server refuses.
    """
    if isinstance(drawing, np.ndarray):
        pixels = drawing
    else:
        if not any(len(stroke) for stroke in drawing):
            raise ImageError("nothing drawn yet: draw a digit on the pad first")
        pixels = render_strokes(drawing)
    image = prepare_image(pixels)
    return DigitAnswer(image, client.predict(image)[0], source)


def predict_upload(client: PredictionClient, data: bytes | bytearray | memoryview,
                   name: str = "upload") -> DigitAnswer:
    """Prepare an uploaded image file (PNG, JPEG... as bytes) and ask the server which digit it is.

    Photos of a digit on paper work too: :func:`~mnist_lib.images.prepare_image`
    inverts dark-on-light images, crops and centres the digit.
    """
    image = prepare_image(bytes(data))
    return DigitAnswer(image, client.predict(image)[0], name)


# ## The widget

def _uploaded_files(value: Any) -> list[tuple[str, bytes]]:
    """``FileUpload.value`` -> ``[(name, bytes)]`` (ipywidgets 8: a tuple of dicts)."""
    files = value.values() if isinstance(value, dict) else value  # ipywidgets 7 used a dict
    return [(f.get("name") or f.get("metadata", {}).get("name", "upload"), bytes(f["content"]))
            for f in files or ()]


class DigitWidget(widgets.VBox):
    """Draw a digit (or upload a picture of one) and see what the served model answers.

    Draw with the mouse on the black pad: each time you lift the pen, the drawing
    is sent to the server. *Clear* starts again. The output shows the image as
    the model sees it (28x28) and its ten probabilities. ``client`` is a
    :class:`~mnist_lib.predict.PredictionClient`: pass one with ``version=1`` to
    ask an older version.
    """

    def __init__(self, client: PredictionClient, auto_predict: bool = True) -> None:
        self.client = client
        self.auto_predict = auto_predict
        self.strokes: list[list[Point]] = []
        self._drawing = False
        self.last_answer: DigitAnswer | None = None
        self.last_error: str | None = None

        self.canvas = Canvas(width=CANVAS_SIZE, height=CANVAS_SIZE,
                             layout=widgets.Layout(width=f"{CANVAS_SIZE}px", height=f"{CANVAS_SIZE}px",
                                                   border="1px solid gray"))
        self.canvas.on_mouse_down(self._pen_down)
        self.canvas.on_mouse_move(self._pen_move)
        self.canvas.on_mouse_up(self._pen_up)
        self.canvas.on_mouse_out(self._pen_up)
        self.clear_button = widgets.Button(description="Clear", icon="eraser")
        self.clear_button.on_click(lambda _: self.clear())
        self.predict_button = widgets.Button(description="Predict drawing", button_style="primary")
        self.predict_button.on_click(lambda _: self.predict_drawing())
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload image",
                                         layout=widgets.Layout(width="auto"))
        self.upload.observe(self._uploaded, names="value")
        self.status = widgets.Label("Draw a digit with the mouse, or upload a picture of one.")
        self.output = widgets.Output(layout=widgets.Layout(min_height="230px"))
        self.clear()
        controls = widgets.VBox([self.clear_button, self.predict_button, self.upload])
        super().__init__([widgets.HBox([self.canvas, controls]), self.status, self.output])

    def __repr__(self) -> str:
        return f"DigitWidget({self.client!r})"

    # ### Drawing: the pen's path is kept as strokes, and mirrored on the canvas
    def clear(self) -> None:
        """Wipe the pad and forget the strokes."""
        self.strokes = []
        self._drawing = False
        self.canvas.fill_style = "black"
        self.canvas.fill_rect(0, 0, CANVAS_SIZE, CANVAS_SIZE)
        self.canvas.stroke_style = "white"
        self.canvas.fill_style = "white"
        self.canvas.line_width = STROKE_WIDTH
        self.canvas.line_cap = "round"
        self.canvas.line_join = "round"

    def _pen_down(self, x: float, y: float) -> None:
        self._drawing = True
        self.strokes.append([(x, y)])
        self.canvas.fill_circle(x, y, STROKE_WIDTH / 2)

    def _pen_move(self, x: float, y: float) -> None:
        if not self._drawing:
            return
        last_x, last_y = self.strokes[-1][-1]
        self.strokes[-1].append((x, y))
        self.canvas.stroke_line(last_x, last_y, x, y)

    def _pen_up(self, x: float, y: float) -> None:
        if not self._drawing:
            return
        self._drawing = False
        if self.auto_predict:
            self.predict_drawing()

    # ### Asking the server
    def predict_drawing(self) -> DigitAnswer | None:
        """Send the current drawing; show and return the answer (None, with a message, on error)."""
        return self._show(lambda: predict_drawing(self.client, self.strokes))

    def _uploaded(self, change: dict[str, Any]) -> None:
        files = _uploaded_files(change["new"])
        for name, data in files:
            self._show(lambda: predict_upload(self.client, data, name))
        if files:
            self.upload.value = ()  # forget it, so the same file can be uploaded again

    def _show(self, ask: Callable[[], DigitAnswer]) -> DigitAnswer | None:
        try:
            answer = ask()
        except (ImageError, PredictError) as error:
            self.last_error = str(error)
            self.status.value = f"Could not predict: {error}"
            return None
        self.last_answer, self.last_error = answer, None
        # The figure as a PNG, set directly (not `with self.output: display(...)`),
        # so it works from any thread and outside a kernel, as in the tests.
        buffer = io.BytesIO()
        answer.figure().savefig(buffer, format="png")
        self.output.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": {"image/png": base64.b64encode(buffer.getvalue()).decode(),
                                         "text/plain": answer.summary()}},)
        self.status.value = answer.summary()  # last: when it says done, the figure is there
        return answer
