"""How many of the public simple directives the embedded model turns into working skills.

    .venv/bin/python bench/bench_embedded.py [--model embedded] [--max-iter 12] [--limit N]

Each directive runs through the real loop and the real sandbox, in a fresh temporary
workspace. Prints one row per directive (status, iterations, seconds) and the total.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.core import AutonomousAgent  # noqa: E402

DIRECTIVES = Path(__file__).with_name("directives.txt")


def load_directives(path: Path = DIRECTIVES) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--max-iter", type=int, default=12)
    parser.add_argument("--limit", type=int, default=None, help="only the first N directives")
    args = parser.parse_args()
    directives = load_directives()[: args.limit]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        for i, goal in enumerate(directives):
            agent = AutonomousAgent(workspace=Path(tmp) / f"ws{i}", model=args.model, max_iter=args.max_iter)
            started = time.monotonic()
            result = agent.run(goal)
            rows.append((result.skill or "?", result.status, result.reason, result.iterations,
                         time.monotonic() - started))
            print(f"{rows[-1][0]:<24} {result.status:<8} {result.reason:<14} "
                  f"{result.iterations:>3} it  {rows[-1][4]:6.1f} s", flush=True)
    working = sum(1 for row in rows if row[1] == "working")
    seconds = [row[4] for row in rows]
    print(f"\n{working}/{len(rows)} directives produced a working skill "
          f"(model {args.model}, max {args.max_iter} iterations; median {statistics.median(seconds):.1f} s, "
          f"total {sum(seconds):.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
