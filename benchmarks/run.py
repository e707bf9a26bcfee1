"""Run every benchmark in turn: ``make benchmark`` (or ``python -m benchmarks.run``).

Each runs in its own process and writes its own JSON file in benchmarks/results/.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ["training", "distributed", "lost_pod", "serving", "container", "sweep_on_cluster"]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"]).returncode != 0:
            failed.append(name)
    print(f"\nbenchmarks done; {'failed: ' + ', '.join(failed) if failed else 'all ran'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
