"""The course image and mnist_lib.container, for real: docker build, docker run, files on the host.

Tests marked ``docker`` need a running daemon. Without one they skip and say why
(a learner's laptop), except when the CI variable is set: then they fail, because
CI must prove the image works (scripts/ensure-docker.sh provides Docker there).

The image is built once per session. ``MNIST_TEST_IMAGE`` names it (default
``mnist-course:test``) and ``MNIST_BASE_IMAGE`` its base (default: the local
``course-base:bookworm`` if it exists, else the Dockerfile's official base).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from mnist_lib import container, paths
from mnist_lib.config import TrainConfig
from mnist_lib.container import DockerError, DockerUnavailable
from mnist_lib.data import load_numpy

TEST_IMAGE = os.environ.get("MNIST_TEST_IMAGE", "mnist-course:test")


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def _containers_of(image: str) -> list[str]:
    """Containers (running or not) created from ``image``: there should be none left."""
    return _docker("ps", "--all", "--quiet", "--filter", f"ancestor={image}").stdout.split()


@pytest.fixture(scope="session")
def docker_ready() -> str:
    ok, message = container.docker_status()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so Docker must work here: {message}")
        pytest.skip(message)
    return message


@pytest.fixture(scope="session")
def course_image(docker_ready: str) -> container.BuildResult:
    """Build the course image once for the whole session (the cache makes reruns quick)."""
    lines: list[str] = []
    result = container.build_image(TEST_IMAGE, progress=lines.append)
    print(f"built {result.tag} from {result.base_image or container.OFFICIAL_BASE_IMAGE} "
          f"in {result.seconds:.0f}s, {result.size_gb:.2f} GB, "
          f"{result.cached_steps}/{result.steps} steps cached")
    return result


def _in_image(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return _docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script)


# -- messages, no daemon needed ------------------------------------------------

def test_missing_docker_command_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no docker anywhere
    ok, message = container.docker_status()
    assert not ok
    assert "not installed" in message and "docs.docker.com" in message
    with pytest.raises(DockerUnavailable, match="not installed"):
        container.build_image("anything:test", context=paths.COURSE_ROOT, progress=None)


def test_unreachable_daemon_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if container.shutil.which("docker") is None:
        pytest.skip("no docker command here (the previous test covers that case)")
    socket = tmp_path / "no-daemon-here.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    ok, message = container.docker_status()
    assert not ok
    assert "daemon is not running" in message
    assert str(socket) in message  # says where it looked
    assert "DOCKER_HOST" in message  # and what to check
    with pytest.raises(DockerUnavailable, match="daemon is not running"):
        container.image_exists("mnist-course:test")
    with pytest.raises(DockerUnavailable):
        container.run_training("mnist-course:test", ["--epochs", "1"], tmp_path, progress=None)


def test_container_config_maps_folders_into_the_mount(tmp_path: Path) -> None:
    config = TrainConfig(model_dir=tmp_path / "runs" / "a", log_dir=tmp_path / "logs",
                         export_dir="/outputs/export", epochs=2)
    inside = container.container_config(config, tmp_path)
    assert inside.model_dir == Path("/outputs/runs/a")
    assert inside.log_dir == Path("/outputs/logs")
    assert inside.export_dir == Path("/outputs/export")  # already a container path: kept
    assert inside.epochs == 2
    # The course's default folders (under outputs/) map too, so TrainConfig() just works.
    assert container.container_config(TrainConfig(), tmp_path).export_dir == Path("/outputs/export")
    with pytest.raises(ValueError, match="outside the mounted folder"):
        container.container_config(TrainConfig(model_dir="/somewhere/else"), tmp_path)


# -- the image, built for real -----------------------------------------------------

@pytest.mark.docker
def test_build_failure_is_a_clear_error_and_leaves_no_container(docker_ready: str, tmp_path: Path) -> None:
    label = f"course-test={uuid.uuid4().hex[:8]}"
    (tmp_path / "Dockerfile").write_text(f"FROM scratch\nLABEL {label}\nRUN false\n")
    try:
        with pytest.raises(DockerError, match="docker build failed") as caught:
            container.build_image("course-broken:test", base_image=None, auto_base=False,
                                  context=tmp_path, progress=None)
        assert "RUN false" in str(caught.value)  # the output's tail shows the failing step
        assert _docker("ps", "--all", "--quiet", "--filter", f"label={label}").stdout.strip() == ""
        assert not container.image_exists("course-broken:test")
    finally:  # the LABEL step's cached layer stays behind as an untagged image: remove it
        for image in _docker("images", "--quiet", "--filter", f"label={label}").stdout.split():
            _docker("image", "rm", image)


@pytest.mark.docker
def test_missing_base_image_says_how_to_make_one(docker_ready: str) -> None:
    with pytest.raises(DockerError, match="could not be found or downloaded") as caught:
        container.build_image("course-broken:test", base_image="course-no-such-base:nope",
                              progress=None)
    assert "scripts/docker-base-image.sh" in str(caught.value)

@pytest.mark.docker
def test_image_runs_as_non_root_with_data_and_writable_outputs(course_image: container.BuildResult) -> None:
    script = ('id -u; echo "$MNIST_DATA_DIR $MNIST_OUTPUT_DIR"; ls "$MNIST_DATA_DIR"; '
              'touch /outputs/probe && echo outputs-writable; '
              'cd / && python -c "import mnist_lib.train, mnist_lib.data; print(mnist_lib.data.__file__)"')
    done = _in_image(course_image.tag, script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[0] != "0", "the image must run as a non-root user"
    assert "/app/data/mnist" in lines and "/outputs" in lines
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in lines
    assert "outputs-writable" in lines
    assert "/app/mnist_lib/data.py" in lines
    entrypoint = _docker("image", "inspect", "--format", "{{json .Config.Entrypoint}}", course_image.tag)
    assert json.loads(entrypoint.stdout)[-2:] == ["-m", "mnist_lib.train"]


@pytest.mark.docker
def test_model_server_module_is_installed(course_image: container.BuildResult) -> None:
    if not (paths.COURSE_ROOT / "mnist_lib" / "serve.py").exists():
        pytest.skip("mnist_lib/serve.py is not written yet")
    done = _in_image(course_image.tag, 'cd / && python -c "import mnist_lib.serve"')
    assert done.returncode == 0, done.stderr[-2000:]


def _layers(tag: str) -> list[str]:
    return json.loads(_docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", tag).stdout)


@pytest.mark.docker
def test_rebuild_reuses_every_layer_below_the_code(course_image: container.BuildResult) -> None:
    """Dependencies come before code in the Dockerfile, so a rebuild never reinstalls TensorFlow.

    (Only the last three layers - pyproject, mnist_lib/, its install - may differ:
    in a shared checkout someone may have edited mnist_lib/ since the first build.)
    """
    before = _layers(course_image.tag)
    again = container.build_image(course_image.tag, base_image=course_image.base_image or None,
                                  auto_base=False, progress=None)
    after = _layers(again.tag)
    assert len(after) == len(before)
    assert after[:-3] == before[:-3]
    assert again.cached_steps >= 5  # user, venv, constraints, pip install, data at least


@pytest.mark.docker
def test_invalid_config_fails_with_the_cli_message(course_image: container.BuildResult, tmp_path: Path) -> None:
    with pytest.raises(DockerError, match="exit status 2") as caught:
        container.run_training(course_image.tag, ["--epochs", "0"], tmp_path, progress=None)
    assert "error: --epochs must be" in str(caught.value)
    assert _containers_of(course_image.tag) == []


@pytest.mark.docker
def test_timeout_stops_and_removes_the_container(course_image: container.BuildResult, tmp_path: Path) -> None:
    config = TrainConfig(epochs=50, architecture="mlp", export_dir=tmp_path / "export",
                         model_dir=tmp_path / "ckpt", log_dir=tmp_path / "logs")
    with pytest.raises(DockerError, match="longer than"):
        container.run_training(course_image.tag, config, tmp_path, progress=None, timeout=4)
    assert _containers_of(course_image.tag) == []


@pytest.mark.docker
@pytest.mark.slow
def test_training_in_a_container_exports_a_servable_model(course_image: container.BuildResult,
                                                           tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    config = TrainConfig(epochs=1, train_limit=2000, architecture="mlp", batch_size=64,
                         model_dir=outputs / "checkpoints", log_dir=outputs / "logs",
                         export_dir=outputs / "export")
    lines: list[str] = []
    run = container.run_training(course_image.tag, config, outputs, progress=lines.append)
    assert run.exit_code == 0
    assert "--export-dir" in run.args and "/outputs/export" in run.args  # same flags, container paths
    assert _containers_of(course_image.tag) == []

    version = outputs / "export" / "mnist" / "1"
    assert (version / "saved_model.pb").is_file(), "\n".join(lines[-20:])
    result = json.loads((outputs / "checkpoints" / "result.json").read_text())
    assert result["test_accuracy"] > 0.5  # one tiny epoch, but far above chance (0.1)

    # Everything the container wrote belongs to (and is readable by) the host user.
    written = [p for p in outputs.rglob("*")]
    assert written
    for path in written:
        assert path.stat().st_uid == os.getuid(), f"{path} is owned by uid {path.stat().st_uid}"
        assert os.access(path, os.R_OK)

    # The export is what TF Serving will load: the serving_default signature, by name.
    from mnist_lib.model import load_exported  # imports Keras: only where a test needs it

    serve = load_exported(version)
    images, _ = load_numpy("test", limit=32)
    answer = serve(images=(images / 255.0).astype(np.float32))  # 0..1, as in training
    probabilities, classes = answer["probabilities"].numpy(), answer["classes"].numpy()
    assert probabilities.shape == (32, 10)
    assert classes.shape == (32,)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(classes, probabilities.argmax(axis=1))



@pytest.mark.docker
def test_training_as_a_uid_unknown_to_the_image(course_image: container.BuildResult, tmp_path: Path) -> None:
    """A learner's uid (1000 on Linux, 501 on a Mac) has no account in the image: it must still work.

    CI runs as root, where the default run above uses uid 0; this covers the laptop case.
    """
    if os.getuid() != 0:
        pytest.skip("needs root to hand the folder to another uid (the run above already used yours)")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    os.chown(outputs, 54321, 54321)
    run = container.run_training(course_image.tag, ["--epochs", "1", "--train-limit", "500",
                                                    "--architecture", "mlp"],
                                 outputs, user="54321:54321", progress=None)
    assert run.exit_code == 0
    assert (outputs / "export" / "mnist" / "1" / "saved_model.pb").is_file()
    assert {p.stat().st_uid for p in outputs.rglob("*")} == {54321}


@pytest.mark.parametrize("stderr, expected", [
    # Real messages from the docker CLI (28.x), as a learner would see them.
    ("permission denied while trying to connect to the Docker daemon socket at "
     "unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.50/info\": "
     "dial unix /var/run/docker.sock: connect: permission denied", "docker group"),
    ("WARNING: Error loading config file: open /root/.docker/config.json: permission denied\n"
     "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
     "Is the docker daemon running?", "daemon is not running"),
    ("error during connect: Get \"http://127.0.0.1:2375/v1.50/info\": dial tcp 127.0.0.1:2375: "
     "connect: connection refused", "daemon is not running"),
    ("Error response from daemon: No such image: nothing:here", None),
    # A training run's own error is not a Docker problem, even if it says "Permission denied".
    ("PermissionError: [Errno 13] Permission denied: '/outputs/checkpoints'", None),
])
def test_daemon_errors_are_told_apart(stderr: str, expected: str | None) -> None:
    reason = container._unavailable_reason(stderr)
    if expected is None:
        assert reason is None  # an ordinary failure, not "Docker is unavailable"
    else:
        assert reason is not None and expected in reason
