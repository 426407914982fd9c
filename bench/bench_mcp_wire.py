"""The MCP server's answer time for a large valid line, and for a ping sent right behind it.

Usage: .venv/bin/python bench/bench_mcp_wire.py [--runs 7] [--values 300000]

Starts ``autonomous_agent.py mcp`` on an empty workspace (a temporary HOME), initializes it over
raw pipes, then per run sends one ``ping`` whose params hold ``--values`` empty arrays (about
900 KB for 300,000) and a plain ping right after it, and times both answers from the moment the
large line was written; a lone ping is timed too, as the floor. Prints the medians (and the
slowest) in milliseconds, and what the large line was answered with.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Server:
    def __init__(self, home: Path) -> None:
        command = [sys.executable, str(ROOT / "autonomous_agent.py"), "mcp", "--workspace", str(home / "ws")]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: S603
                                        stderr=subprocess.DEVNULL, env={"HOME": str(home)})
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}))
        self.reply()
        self.send('{"jsonrpc": "2.0", "method": "notifications/initialized"}')

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.replies.put((time.perf_counter(), json.loads(line)))

    def send(self, line: bytes | str) -> None:
        self.process.stdin.write((line.encode() if isinstance(line, str) else line) + b"\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]

    def reply(self) -> tuple[float, dict]:
        return self.replies.get(timeout=120)

    def close(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--values", type=int, default=300_000)
    args = parser.parse_args()
    big = (b'{"jsonrpc": "2.0", "id": "big", "method": "ping", "params": {"a": ['
           + b",".join([b"[]"] * args.values) + b"]}}")
    lone, behind, floor, answered = [], [], [], ""
    with tempfile.TemporaryDirectory() as home:
        server = Server(Path(home))
        try:
            for run in range(args.runs):
                start = time.perf_counter()
                server.send(f'{{"jsonrpc": "2.0", "id": "floor-{run}", "method": "ping"}}')
                floor.append(server.reply()[0] - start)
                start = time.perf_counter()
                server.send(big)
                server.send(f'{{"jsonrpc": "2.0", "id": "behind-{run}", "method": "ping"}}')
                for _ in range(2):
                    at, reply = server.reply()
                    if reply["id"] == "big":
                        lone.append(at - start)
                        answered = json.dumps(reply.get("error") or reply.get("result"))[:120]
                    else:
                        behind.append(at - start)
        finally:
            server.close()

    def row(name: str, samples: list[float]) -> str:
        return f"{name:<28} median {statistics.median(samples) * 1000:8.1f} ms   slowest {max(samples) * 1000:8.1f} ms"

    print(f"line of {len(big):,} bytes, {args.values:,} empty arrays; {args.runs} runs")
    print(row("lone ping", floor))
    print(row("the large line", lone))
    print(row("a ping right behind it", behind))
    print(f"the large line was answered: {answered}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
