# The course's training image: `python -m mnist_lib.train` with the MNIST data baked in.
#
#   docker build -t mnist-course .                       # official base (Docker Hub)
#   docker build -t mnist-course --build-arg BASE_IMAGE=course-base:bookworm .
#                                                         # local base, no registry needed
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/outputs:/outputs" \
#       mnist-course --epochs 1 --architecture mlp      # the model lands in ./outputs/export
#
# Layers go from what changes least to what changes most, so editing mnist_lib/
# rebuilds only the last few seconds' worth: base, user, venv, pinned dependencies
# (the big, slow layer), MNIST data, then the course's code.

# Any Debian-like image with python3 3.11 and the venv module will do: the official
# python:3.11-slim-bookworm, or scripts/docker-base-image.sh's course-base:bookworm.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A non-root user (uid 1000) runs everything; /outputs is where runs write
# (on a cluster the shared volume is mounted there), so it must be writable by it.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash course \
 && mkdir -p /outputs \
 && chown course:course /outputs

# A venv, not the base's own Python: identical on both bases (python3 -m venv),
# and pip never touches the system packages. pip/setuptools/wheel as in .venv.
RUN python3 -m venv /opt/venv \
 && pip install --quiet pip==25.3 setuptools==80.9.0 wheel==0.48.0

# The dependencies of what runs in a container (training, and the model server of
# chapter 06), at the exact versions of the course's full lock, constraints.txt.
# The notebook tools come in the next layer, and the test tools (nbval, pytest, the
# schema validator) not at all. (constraints.txt holds soupsieve at 2.8: 4.x needs a
# newer Python 3.11.x than Debian's 3.11.2.)
ARG RUNTIME_PACKAGES="tensorflow tensorboard tensorflow-serving-api keras numpy protobuf grpcio pillow"
COPY constraints.txt /tmp/deps/
RUN pip install --quiet -c /tmp/deps/constraints.txt ${RUNTIME_PACKAGES} \
 && rm -rf /tmp/deps

# JupyterLab and what the notebooks import beside the runtime, for a workshop whose attendees
# have only a browser: `python -m mnist_lib.room up --jupyter` runs this image as their JupyterLab.
# Training pods never start it. (nbval, pytest and the schema validator stay out.)
ARG LAB_PACKAGES="jupyterlab ipykernel ipywidgets ipycanvas matplotlib kubernetes PyYAML psutil nbformat"
COPY constraints.txt /tmp/deps/
RUN pip install --quiet -c /tmp/deps/constraints.txt ${LAB_PACKAGES} \
 && rm -rf /tmp/deps \
 && mkdir -p /opt/venv/share/jupyter/lab/settings \
 && echo '{"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"}, \
            "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
      > /opt/venv/share/jupyter/lab/settings/overrides.json
# (Every cell rendered, not only those in view: the chapters are short. No news or update
# checks: a room's cluster may have no route to the internet, and a pop-up hides the cells.)

# MNIST, shipped: nothing is downloaded when a container starts.
COPY data/ /app/data/

# The course's library, at /app/mnist_lib where a learner can read it, installed
# in editable mode: `python -m mnist_lib.<anything>` then works from any folder
# (training, and the model server of chapter 06) and every subpackage is found.
# Root owns the code; the user who runs it cannot change it.
COPY pyproject.toml requirements.txt README.m[d] /app/
COPY mnist_lib/ /app/mnist_lib/
RUN pip install --quiet --no-deps --no-build-isolation --editable /app \
 && rm -rf /app/*.egg-info /app/build \
 && cd / && python -c "import mnist_lib.config, mnist_lib.train"

# The chapters, last: their stored outputs change most often. A JupyterLab pod copies them to
# a writable folder (mnist_lib.manifests.jupyterlab).
COPY notebooks/*.ipynb /app/notebooks/

ENV MNIST_DATA_DIR=/app/data/mnist \
    MNIST_OUTPUT_DIR=/outputs \
    HOME=/home/course
WORKDIR /app
USER course
# TF Serving's ports, for `python -m mnist_lib.serve` (gRPC 8500, REST 8501).
EXPOSE 8500 8501
ENTRYPOINT ["/opt/venv/bin/python", "-m", "mnist_lib.train"]
