"""Build and run the course's container image through the ``docker`` command (chapter 02).

Why the docker CLI and not a Python SDK: it is what you will type yourself, and
every function here runs one command you can copy from :func:`last_command`
into a terminal. Output is streamed line by line to ``progress`` (``print`` by
default), so a build or a training run shows its progress in a notebook cell
as it happens, not all at once at the end.

The pieces:

- :func:`docker_status` / :func:`require_docker`: is Docker usable? If not, a
  :class:`DockerUnavailable` error says what is wrong and how to fix it.
- :func:`build_image`: ``docker build`` of the course's ``Dockerfile``.
- :func:`run_training`: ``docker run`` of the training entrypoint with a
  :class:`~mnist_lib.config.TrainConfig` - the same flags as a local run - and a
  host folder mounted at ``/outputs``, where the image writes everything (the
  same path a Kubernetes pod mounts its shared volume at).
- :func:`image_exists`, :func:`image_size`, :func:`remove_image`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mnist_lib import paths
from mnist_lib.config import TrainConfig
from mnist_lib.constants import OUTPUT_MOUNT  # where the image writes (its MNIST_OUTPUT_DIR)
from mnist_lib.settings import DEFAULT_IMAGE  # the tag the chapters build and run

#: The Dockerfile's default base, pulled from Docker Hub.
OFFICIAL_BASE_IMAGE = "python:3.11-slim-bookworm"
#: The stand-in that ``scripts/docker-base-image.sh`` makes on machines with no registry.
LOCAL_BASE_IMAGE = "course-base:bookworm"

Progress = Callable[[str], None] | None

_last_command: list[str] = []


class DockerUnavailable(RuntimeError):
    """Docker cannot be used here: not installed, daemon not running, or no permission.

    The message says which, and what to do about it.
    """


class DockerError(RuntimeError):
    """A docker command ran but failed (a build step, a training run). The message ends
    with the last lines of its output, where the reason usually is."""


# -- is Docker there? --------------------------------------------------------

def _docker_binary() -> str:
    found = shutil.which("docker")
    if found is None:
        raise DockerUnavailable(
            "Docker is not installed: there is no `docker` command on PATH. Install Docker "
            "Desktop (macOS, Windows) or Docker Engine (Linux: https://docs.docker.com/engine/install/), "
            "then run this again."
        )
    return found


def _unavailable_reason(stderr: str) -> str | None:
    """If docker's error output means "can't reach the daemon", say why in plain words."""
    # Ignore docker's warnings (e.g. an unreadable ~/.docker/config.json): not the reason.
    text = "\n".join(line for line in stderr.strip().splitlines() if not line.startswith("WARNING"))
    lowered = text.lower()
    where = os.environ.get("DOCKER_HOST") or "the current docker context (see `docker context ls`)"
    if "permission denied" in lowered and "docker daemon" in lowered:
        return (f"You are not allowed to use the Docker daemon at {where} ({_last_line(text)}). "
                "On Linux add yourself to the docker group: `sudo usermod -aG docker $USER`, "
                "then log out and in again (or run `newgrp docker`).")
    if ("cannot connect to the docker daemon" in lowered or "error during connect" in lowered
            or "is the docker daemon running" in lowered
            or ("no such file or directory" in lowered and "docker.sock" in lowered)):
        return (f"Docker is installed but its daemon is not running (or not at {where}): "
                f"{_last_line(text)} Start Docker Desktop, or on Linux `sudo systemctl start docker`; "
                "in the course's CI, scripts/ensure-docker.sh starts it. If DOCKER_HOST is set, "
                "check that it points at a running daemon.")
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _run_quiet(args: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a short docker command and capture its output. Raises DockerUnavailable."""
    command = [_docker_binary(), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DockerUnavailable(
            f"`docker {' '.join(args)}` did not answer within {timeout:.0f}s: the Docker daemon "
            "is stuck or starting. Wait a moment and try again, or restart Docker."
        ) from None
    if done.returncode != 0:
        reason = _unavailable_reason(done.stderr)
        if reason:
            raise DockerUnavailable(reason)
    return done


def require_docker(timeout: float = 30) -> str:
    """Return the Docker server's version, or raise :class:`DockerUnavailable` saying why not."""
    done = _run_quiet(["version", "--format", "{{.Server.Version}}"], timeout=timeout)
    if done.returncode != 0:
        raise DockerUnavailable(
            f"`docker version` failed: {_last_line(done.stderr) or 'no output'}. "
            "Check that Docker runs (`docker info`)."
        )
    return done.stdout.strip()


def docker_status(timeout: float = 30) -> tuple[bool, str]:
    """``(True, "Docker 27.1 is running ...")`` or ``(False, what is wrong and what to do)``.

    Never raises: handy for a notebook cell or a test that should skip with a reason.
    """
    try:
        version = require_docker(timeout)
    except DockerUnavailable as err:
        return False, str(err)
    return True, f"Docker {version} is running (docker CLI: {shutil.which('docker')})."


# -- running docker commands with streamed output ----------------------------

def last_command() -> str:
    """The last long-running docker command this module started, ready to paste in a shell."""
    return shlex.join(_last_command)


def _stream(args: Sequence[str], progress: Progress, timeout: float | None,
            on_timeout: Callable[[], None] | None = None) -> tuple[int, list[str], bool]:
    """Run ``docker <args>``, pass each output line to ``progress`` as it comes.

    Returns (exit status, all output lines, timed out?). stderr is merged into
    stdout so that messages stay in order with the progress lines.
    """
    command = [_docker_binary(), *args]
    _last_command[:] = ["docker", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, bufsize=1,
                               errors="replace")
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        if on_timeout:
            on_timeout()
        process.kill()

    timer = threading.Timer(timeout, stop) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            if progress:
                progress(line)
        process.wait()
    finally:
        if timer:
            timer.cancel()
        if process.poll() is None:  # interrupted (e.g. Ctrl-C in a notebook): stop docker too
            process.kill()
            process.wait()
    return process.returncode, lines, timed_out.is_set()


def _failure(what: str, code: int, lines: list[str], advice: str) -> DockerError | DockerUnavailable:
    reason = _unavailable_reason("\n".join(lines[-5:]))
    if reason:
        return DockerUnavailable(reason)
    tail = "\n".join(lines[-25:])
    return DockerError(f"{what} failed (exit status {code}). {advice}\n"
                       f"--- last lines of its output ---\n{tail}")


# -- images -------------------------------------------------------------------

@dataclass
class BuildResult:
    """What :func:`build_image` did."""

    tag: str
    image_id: str
    base_image: str  # "" means the Dockerfile's default (OFFICIAL_BASE_IMAGE)
    seconds: float
    size_bytes: int
    steps: int  # Dockerfile steps run or taken from the cache
    cached_steps: int  # of those, how many came from the build cache
    log: list[str] = field(default_factory=list, repr=False)

    @property
    def size_gb(self) -> float:
        return self.size_bytes / 1e9


def image_exists(tag: str) -> bool:
    """True if an image called ``tag`` is in the local Docker daemon."""
    return _run_quiet(["image", "inspect", "--format", "{{.Id}}", tag]).returncode == 0


def image_size(tag: str) -> int:
    """Size of the image in bytes (its layers unpacked, as ``docker images`` shows)."""
    done = _run_quiet(["image", "inspect", "--format", "{{.Size}}", tag])
    if done.returncode != 0:
        raise DockerError(f"no image {tag!r}: {_last_line(done.stderr)}. Build it with build_image().")
    return int(done.stdout.strip())


def remove_image(tag: str, force: bool = False) -> bool:
    """Delete the image ``tag``; return False if there was none.

    Layers shared with other images stay, so the next build can reuse them.
    """
    if not image_exists(tag):
        return False
    done = _run_quiet(["image", "rm", *(["--force"] if force else []), tag])
    if done.returncode != 0:
        raise DockerError(f"could not remove {tag!r}: {_last_line(done.stderr)} "
                          "(a container still using it? `docker ps -a`)")
    return True


def pick_base_image() -> str | None:
    """The base to build from: ``MNIST_BASE_IMAGE`` if set, else the locally made
    ``course-base:bookworm`` if it exists (a machine with no registry), else None:
    the Dockerfile's default, ``python:3.11-slim-bookworm`` from Docker Hub."""
    chosen = os.environ.get("MNIST_BASE_IMAGE")
    if chosen:
        return chosen
    return LOCAL_BASE_IMAGE if image_exists(LOCAL_BASE_IMAGE) else None


def build_image(tag: str = DEFAULT_IMAGE, base_image: str | None = None,
                context: Path | str = paths.COURSE_ROOT, progress: Progress = print,
                timeout: float | None = 1800, auto_base: bool = True,
                no_cache: bool = False) -> BuildResult:
    """``docker build`` the course's Dockerfile in ``context`` and tag it ``tag``.

    ``base_image`` fills the Dockerfile's ``BASE_IMAGE`` argument; when None and
    ``auto_base`` is true, :func:`pick_base_image` chooses. Each output line goes
    to ``progress`` as it arrives (``progress=None`` for silence). ``no_cache``
    rebuilds every layer (what a first build on a new machine costs). The first build
    downloads TensorFlow (minutes); a rebuild after changing only ``mnist_lib/``
    reuses every layer above the code and takes seconds.

    Raises :class:`DockerUnavailable` if Docker is not usable, :class:`DockerError`
    if the build fails (with the last lines of its output).
    """
    require_docker()
    context = Path(context).resolve()
    if not (context / "Dockerfile").is_file():
        raise FileNotFoundError(f"no Dockerfile in {context}: pass context= the course's top folder.")
    if base_image is None and auto_base:
        base_image = pick_base_image()
    args = ["build", "--force-rm", "--tag", tag]  # --force-rm: no containers left if a step fails
    if no_cache:
        args.append("--no-cache")
    if base_image:
        args += ["--build-arg", f"BASE_IMAGE={base_image}"]
    args.append(str(context))

    previous = _run_quiet(["image", "inspect", "--format", "{{.Id}}", tag]).stdout.strip()
    started = time.monotonic()
    code, lines, timed_out = _stream(args, progress, timeout)
    seconds = time.monotonic() - started
    if timed_out:
        raise DockerError(f"docker build took longer than {timeout:.0f}s and was stopped. "
                          "A slow network? Run again: finished layers are cached.")
    if code != 0:
        base = base_image or OFFICIAL_BASE_IMAGE
        steps = [line for line in lines if re.match(r"Step \d+/\d+ :|#\d+ \[", line)]
        if steps and ("FROM" in steps[-1] or "load metadata for" in steps[-1]):  # getting the base
            advice = (f"The base image {base!r} could not be found or downloaded (no registry "
                      "reachable, or a typo). Without a registry, make a local base with "
                      f"scripts/docker-base-image.sh (as root) and pass base_image={LOCAL_BASE_IMAGE!r}.")
        else:
            advice = ("Find the failing step in the output below. A pip error usually means no "
                      "network (or, behind a proxy, a base image without the proxy's CA certificate).")
        raise _failure("docker build", code, lines, advice)
    image_id = _run_quiet(["image", "inspect", "--format", "{{.Id}}", tag]).stdout.strip()
    if previous and previous != image_id:
        # The tag moved to the new image; the old one would linger as "<none>". Remove
        # it (its layers shared with the new image stay). Fails harmlessly if in use.
        _run_quiet(["image", "rm", previous])
    return BuildResult(
        tag=tag, image_id=image_id, base_image=base_image or "", seconds=seconds,
        size_bytes=image_size(tag),
        # Legacy builder: "Step 3/17 :" and " ---> Using cache"; BuildKit: "#7 [3/9] RUN" and "CACHED".
        steps=sum(bool(re.match(r"Step \d+/\d+ :|#\d+ \[\S+ \d+/\d+\]", line)) for line in lines),
        cached_steps=sum(("Using cache" in line) or line.rstrip().endswith(" CACHED") for line in lines),
        log=lines,
    )


# -- training in a container -------------------------------------------------

@dataclass
class RunResult:
    """What :func:`run_training` did. ``outputs_dir`` holds what the run wrote."""

    image: str
    args: list[str]
    outputs_dir: Path
    exit_code: int
    seconds: float
    log: list[str] = field(default_factory=list, repr=False)


def host_user() -> str | None:
    """``"uid:gid"`` of this process (the ``--user`` that makes mounted files yours), or
    None where there are no numeric users (Windows: Docker Desktop maps ownership itself)."""
    if not hasattr(os, "getuid"):
        return None
    return f"{os.getuid()}:{os.getgid()}"


def container_config(config: TrainConfig, outputs_dir: Path | str) -> TrainConfig:
    """The same config with its folders moved to where the container sees them.

    A folder inside ``outputs_dir`` (or inside the course's usual output folder,
    where the defaults point) becomes the same folder under ``/outputs``, the
    mount point. Anything else is an error: the container could not write it.
    """
    outputs_dir = Path(outputs_dir).resolve()
    changes = {}
    for name in ("model_dir", "log_dir", "export_dir"):
        folder = Path(getattr(config, name))
        if folder.is_relative_to(OUTPUT_MOUNT):
            continue  # already a container path
        for host_root in (outputs_dir, paths.output_dir().resolve()):
            if folder.resolve().is_relative_to(host_root):
                relative = folder.resolve().relative_to(host_root)
                changes[name] = Path(OUTPUT_MOUNT) / relative
                break
        else:
            raise ValueError(
                f"--{name.replace('_', '-')} {str(folder)!r} is outside the mounted folder "
                f"{str(outputs_dir)!r}: the container can only write there. Use a folder inside it.")
    return dataclasses.replace(config, **changes)


def run_training(image: str = DEFAULT_IMAGE, config: TrainConfig | Sequence[str] | None = None,
                 outputs_dir: Path | str | None = None, *, user: str | None = "host",
                 env: Mapping[str, str] | None = None, network: str | None = "none",
                 progress: Progress = print, timeout: float | None = 3600) -> RunResult:
    """Train in a container: ``docker run --rm <image> <flags>`` with ``outputs_dir`` at ``/outputs``.

    ``config``: a :class:`TrainConfig` (its flags, from ``to_args()``, with its
    folders mapped into ``/outputs`` by :func:`container_config`: the run in the
    container is the same run as a local one), or a list of CLI flags passed as
    they are, or None for the image's defaults.

    ``outputs_dir`` (default: the course's ``outputs/``) is created first, by you,
    so it belongs to you (if Docker creates a missing mount folder, root owns it).
    ``user="host"`` runs the container as your uid:gid so the files it writes are
    yours on the host; ``user=None`` keeps the image's own non-root user (uid 1000).
    ``network="none"``: training needs no network - the data is in the image.

    The container is named, and removed if the run is interrupted or times out:
    no container is left behind. Raises :class:`DockerError` if training fails
    (exit status 2 = invalid configuration, 1 = training error).
    """
    require_docker()
    outputs_dir = Path(outputs_dir if outputs_dir is not None else paths.output_dir()).resolve()
    outputs_dir.mkdir(parents=True, exist_ok=True)

    if isinstance(config, TrainConfig):
        inside = container_config(config, outputs_dir)
        # Validate the host's view of the same folders: a typo fails here, in a
        # fraction of a second, not after a container start.
        host_view = {name: outputs_dir / Path(getattr(inside, name)).relative_to(OUTPUT_MOUNT)
                     for name in ("model_dir", "log_dir", "export_dir")}
        dataclasses.replace(inside, **host_view).validate()
        train_args = inside.to_args()
    else:
        train_args = list(config or [])

    name = f"mnist-train-{uuid.uuid4().hex[:8]}"
    args = ["run", "--rm", "--name", name,
            "--mount", f"type=bind,source={outputs_dir},target={OUTPUT_MOUNT}"]
    if user == "host":
        user = host_user()
    if user:
        # An arbitrary uid has no home folder in the image: give it a writable one.
        args += ["--user", user, "--env", "HOME=/tmp"]
    if network:
        args += ["--network", network]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    args += [image, *train_args]

    def remove_container() -> None:
        subprocess.run([_docker_binary(), "rm", "--force", name], capture_output=True, timeout=60)

    started = time.monotonic()
    finished = False
    try:
        code, lines, timed_out = _stream(args, progress, timeout, on_timeout=remove_container)
        finished = True
    finally:
        if not finished:  # interrupted: the docker CLI is gone, the container may not be
            remove_container()
    seconds = time.monotonic() - started
    if timed_out:
        raise DockerError(f"training in {image} took longer than {timeout:.0f}s; the container "
                          f"{name} was removed. Train less (--epochs, --train-limit) or raise timeout=.")
    if code != 0:
        raise _failure(f"training in a container ({image})", code, lines,
                       "Exit status 2 means an invalid flag or missing data (the 'error:' line says "
                       "which); 125 means docker could not start it (no such image? build_image()).")
    return RunResult(image=image, args=train_args, outputs_dir=outputs_dir, exit_code=code,
                     seconds=seconds, log=lines)
