"""Sandbox overhead: a trivial skill run under each available level vs plain ``python -I``.

Usage: .venv/bin/python bench/bench_sandbox.py [--runs 30]
Prints median and p95 wall time per level, one table (the lead quotes it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safety import Sandbox, available_levels  # noqa: E402

SKILL = "def add(a, b):\n    return a + b\n"


def _stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def bench_plain(cwd: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-B", "-c", "import sys; sys.path.insert(0, '.');"
                        " import skill; assert skill.add(2, 3) == 5"], cwd=cwd, check=True)
        out.append(time.perf_counter() - t)
    return out


def bench_level(level: str, workspace: Path, cwd: Path, runs: int) -> list[float]:
    box = Sandbox.probe(workspace, force_level=level, allow_unsandboxed=True)
    code = ["-c", "import sys; sys.path.insert(0, '.'); import skill; "
            "assert skill.add(2, 3) == 5"]
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        res = box.run_python(code, cwd=cwd)
        out.append(time.perf_counter() - t)
        assert res.returncode == 0, res.stderr
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        workspace = Path(tmp).resolve()
        cwd = workspace / "exec" / "bench"
        cwd.mkdir(parents=True)
        (cwd / "skill.py").write_text(SKILL)
        rows = [("python -I (no sandbox)", bench_plain(cwd, args.runs))]
        for level in available_levels():
            rows.append((f"sandbox: {level}", bench_level(level, workspace, cwd, args.runs)))
    base = _stats(rows[0][1])[0]
    print(f"{'run of a trivial skill':<26}{'median ms':>10}{'p95 ms':>10}{'overhead ms':>13}")
    for label, samples in rows:
        med, p95 = _stats(samples)
        print(f"{label:<26}{med:>10.1f}{p95:>10.1f}{med - base:>13.1f}")
    print(f"({args.runs} runs each, {sys.platform}, python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
