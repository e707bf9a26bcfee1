"""A real browser runs chapter 07 in a real JupyterLab: sliders and the live plot must render.

JupyterLab starts on a free port of 127.0.0.1 with a token; Debian's Chromium runs
headless with a fresh profile; ``tests/browser/run_notebook.mjs`` (playwright-core,
connected over the DevTools protocol, never downloading a browser) opens the notebook,
runs all cells and takes screenshots into ``test-artifacts/``. The notebook is a copy
in a temporary folder, so JupyterLab's autosave never touches the committed one.

Setup: ``scripts/ensure-chromium.sh`` (``make test`` runs it). Without Chromium or
playwright-core the test skips and says why; under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from conftest import COURSE_ROOT, free_port

NOTEBOOK = COURSE_ROOT / "notebooks" / "07_hyperparameter_sweeps.ipynb"
DRIVER_DIR = COURSE_ROOT / "tests" / "browser"
ARTIFACTS = COURSE_ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1",
                  "--remote-debugging-port=0"]
RUN_TIMEOUT = 900


def missing_tool() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (run scripts/ensure-chromium.sh, or set CHROMIUM)"
    if shutil.which("node") is None:
        return "Node.js is not installed (needed to run playwright-core)"
    if not (DRIVER_DIR / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed: run scripts/ensure-chromium.sh (npm ci in tests/browser)"
    return None


@pytest.fixture
def tools():
    reason = missing_tool()
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the browser test, but {reason}")
        pytest.skip(reason)


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A process in its own process group, so that stopping it stops everything it started."""
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)


def stop(proc: subprocess.Popen, grace: float = 10) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer; log:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def devtools_url(profile: Path, proc: subprocess.Popen, log: Path, timeout: float = 60) -> str:
    """Chromium writes the port it chose (--remote-debugging-port=0) into its profile folder."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while not port_file.is_file() or not port_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"Chromium did not start; log:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return f"http://127.0.0.1:{port_file.read_text().split()[0]}"


def alive(processes: list[psutil.Process]) -> list[str]:
    left = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(p.cmdline()[:4]))
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.mark.slow
def test_chapter_07_runs_in_jupyterlab_in_chromium(tools, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("chapter07-*"):  # no stale screenshot may pass for this run's
        old.unlink()
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    # Show every cell in the page (JupyterLab may otherwise render only those in view).
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))

    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, "MNIST_OUTPUT_DIR": str(tmp_path / "outputs"), "MNIST_BACKEND": "local",
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "MNIST_LOCAL_STATE_DIR": str(tmp_path / "local-cluster")}
    lab_log, chrome_log = ARTIFACTS / "chapter07-jupyterlab.log", ARTIFACTS / "chapter07-chromium.log"
    lab = start([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                 f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                 f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
                 f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.news_url=None",
                 "--LabApp.extension_manager=readonly",  # no extension queries to PyPI
                 "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the driver reads kernel state
                 *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI containers run as root
                lab_log, env)
    profile = tmp_path / "chromium-profile"
    chrome = start([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"], chrome_log)
    started = [psutil.Process(lab.pid), psutil.Process(chrome.pid)]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/api/status?token={token}", 120, lab, lab_log)
        cdp = devtools_url(profile, chrome, chrome_log)
        driver = subprocess.run(
            ["node", "run_notebook.mjs", "--cdp", cdp, "--artifacts", str(ARTIFACTS),
             "--url", f"{base}/lab/tree/{NOTEBOOK.name}?token={token}",
             "--timeout-seconds", str(RUN_TIMEOUT)],
            cwd=DRIVER_DIR, capture_output=True, text=True, timeout=RUN_TIMEOUT + 300)
        lines = driver.stdout.strip().splitlines()
        assert lines, f"the driver printed nothing; stderr:\n{driver.stderr[-3000:]}"
        report = json.loads(lines[-1])
        print("\n".join(report["steps"]))
        assert driver.returncode == 0 and not report["errors"], report["errors"]
        assert report["sliders"] >= 6, report          # learning rate from/to, values, layers, epochs, ...
        assert report["livePlotWidth"] > 100, report   # a real picture, not a broken image
        assert report["livePlotUpdates"] >= 2, report  # it changed while the sweep ran
        assert report["executed"] == report["codeCells"] > 10, report
        for name in ("chapter07-sliders.png", "chapter07-live-plot.png", "chapter07-browser.png"):
            assert (ARTIFACTS / name).stat().st_size > 5000, name
    finally:
        # Kernels first (they own the trial processes), then the server and the browser.
        everything = started + [c for p in started if p.is_running() for c in p.children(recursive=True)]
        try:
            request = urllib.request.Request(f"{base}/api/kernels?token={token}")
            with urllib.request.urlopen(request, timeout=10) as answer:
                for kernel in json.load(answer):
                    urllib.request.urlopen(urllib.request.Request(
                        f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE"), timeout=30)
        except OSError:
            pass
        stop(lab)
        stop(chrome)
        deadline = time.monotonic() + 20
        while alive(everything) and time.monotonic() < deadline:
            time.sleep(0.5)
    assert not alive(everything), f"left running: {alive(everything)}"
