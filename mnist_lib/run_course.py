"""Run the whole course headless: every notebook in order, then a short summary.

``make run-course`` (or ``python -m mnist_lib.run_course``). Useful before a
workshop: it proves that this machine runs every chapter, the way the room will.
The notebooks are executed into ``outputs/executed/`` and left untouched in
``notebooks/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mnist_lib import paths


def notebooks(folder: Path | None = None) -> list[Path]:
    """The chapters, in order (``00_...`` to ``07_...``)."""
    folder = folder or paths.COURSE_ROOT / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path: Path, output_dir: Path, timeout: int = 900) -> tuple[bool, float, str]:
    """Execute one notebook; return (ok, seconds, error summary)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    try:
        client.execute()
        ok, error = True, ""
    except CellExecutionError as err:
        ok = False
        lines = [line for line in str(err).splitlines() if line.strip()]
        error = lines[-1][:300] if lines else "a cell failed"
    finally:
        output_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, output_dir / path.name)
    return ok, time.perf_counter() - started, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_lib.run_course", description=__doc__)
    parser.add_argument("chapters", nargs="*", help="only these chapter numbers (e.g. 00 01)")
    args = parser.parse_args(argv)
    output_dir = paths.output_dir() / "executed"
    chosen = [p for p in notebooks() if not args.chapters or p.name[:2] in args.chapters]
    results = []
    for path in chosen:
        print(f"running {path.name} ...", flush=True)
        results.append((path.name, *run_notebook(path, output_dir)))
    print(f"\n{'chapter':<40} {'result':<7} time")
    for name, ok, seconds, error in results:
        print(f"{name:<40} {'ok' if ok else 'FAILED':<7} {seconds:5.0f} s  {error}")
    total = sum(r[2] for r in results)
    failed = [r for r in results if not r[1]]
    print(f"\n{len(results) - len(failed)} of {len(results)} chapters ran in {total / 60:.1f} min; "
          f"executed copies in {paths.relative(output_dir)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
