"""Fault check: memory under SIGKILL and under two writers at once.

1. ``--kills`` times: a process updates memory as fast as it can (a skill, a failure, a directive
   started) and is SIGKILLed at a random moment; memory.json must then load (valid) and hold
   every failure the SQLite log holds.
2. Two processes each upsert ``--writes`` skills at once: none may be lost.

    .venv/bin/python bench/bench_faults.py [--kills 30] [--writes 60]
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.errors import MemoryCorrupted  # noqa: E402
from agent.memory import Memory  # noqa: E402

BUSY = """
import sys
sys.path.insert(0, {root!r})
from agent.memory import Memory
memory = Memory({workspace!r})
i = 0
while True:
    i += 1
    memory.upsert_skill(f"s{{i % 50}}", status="working")
    memory.record_failure(skill="x", error=f"e{{i}}", category="crash", code_snippet="", iteration=1,
                          directive_id=None)
    memory.start_directive(memory.add_directive("a goal", 3))
"""
WRITER = """
import sys
sys.path.insert(0, {root!r})
from agent.memory import Memory
memory = Memory({workspace!r})
for i in range({writes}):
    memory.upsert_skill(f"{{sys.argv[1]}}_{{i}}", status="working")
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--writes", type=int, default=60)
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "killed"
        valid = 0
        for _ in range(args.kills):
            busy = subprocess.Popen([sys.executable, "-c", BUSY.format(root=str(ROOT), workspace=str(workspace))])  # noqa: S603
            time.sleep(random.uniform(0.6, 1.5))  # noqa: S311 - a random moment, not a secret
            busy.send_signal(signal.SIGKILL)
            busy.wait()
            try:
                Memory(workspace).read()
                valid += 1
            except MemoryCorrupted as err:
                print(f"corrupted: {err}")
        memory = Memory(workspace)
        memory.recover()
        doc = memory.read()
        running = sum(d["status"] == "running" for d in doc["directives"])
        logged = memory.history.failure_count()
        debris = [p.name for p in workspace.rglob("*.tmp")]
        print(f"kill -9 while writing: memory.json valid {valid}/{args.kills}; failures counted "
              f"{doc['failures_total']}, in history.sqlite {logged} (one more when a kill fell between the two); "
              f"directives left running after a start: {running}; temp files left: {len(debris)}")
        ok &= valid == args.kills and running == 0 and not debris and logged - doc["failures_total"] in (0, 1)

        workspace = Path(tmp) / "shared"
        writers = [subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), workspace=str(workspace),  # noqa: S603
                                                                         writes=args.writes), name])
                   for name in ("a", "b")]
        for writer in writers:
            writer.wait()
        kept = len(Memory(workspace).read()["skills"])
        print(f"two agents writing at once: {kept}/{2 * args.writes} skills kept")
        ok &= kept == 2 * args.writes
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
