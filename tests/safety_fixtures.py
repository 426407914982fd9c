"""Canaries for the safety tests: files, listeners and a process on the host that sandboxed
code must not touch. Nothing here talks to anything beyond 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path


class _Listener:
    """Accepts (stream) or receives (datagram) on a socket in a thread; records any contact."""

    def __init__(self, sock: socket.socket, stream: bool) -> None:
        self.sock, self.stream, self.hits = sock, stream, 0
        sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.stream:
                    conn, _ = self.sock.accept()
                    conn.close()
                else:
                    self.sock.recvfrom(4096)
                self.hits += 1
            except (TimeoutError, OSError):
                continue

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@dataclass
class Canaries:
    outside: Path
    workspace: Path
    skills: Path
    canary: Path
    secret: Path
    token: str
    env_token: str
    tcp: _Listener
    udp: _Listener
    unix: _Listener
    abstract: _Listener
    unix_path: Path
    abstract_name: str
    process: subprocess.Popen
    before: dict[str, bytes] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, object]:
        return {"outside": str(self.outside), "canary": str(self.canary),
                "secret": str(self.secret), "port": self.tcp.sock.getsockname()[1],
                "udp_port": self.udp.sock.getsockname()[1], "sock": str(self.unix_path),
                "abstract": self.abstract_name, "pid": self.process.pid,
                "skills": str(self.skills), "outside_parts": ["", *self.outside.parts[1:]]}

    def snapshot(self) -> dict[str, bytes]:
        out = {}
        for root in (self.outside, self.skills):
            for path in sorted(root.rglob("*")):
                if path.is_file() and not path.is_socket():
                    out[str(path)] = path.read_bytes()
                elif not path.is_socket():
                    out[str(path)] = b"<dir>"
        return out

    def violations(self, output: str) -> list[str]:
        """Everything a contained run must leave as it was."""
        bad = []
        if self.snapshot() != self.before:
            bad.append("files outside the workspace (or the skills dir) changed")
        for name in ("tcp", "udp", "unix", "abstract"):
            if getattr(self, name).hits:
                bad.append(f"the host {name} listener was contacted")
        if self.process.poll() is not None:
            bad.append("the host canary process was killed")
        if self.token in output:
            bad.append("the host secret file's content appeared in the output")
        if self.env_token in output:
            bad.append("the host environment leaked into the output")
        return bad

    def close(self) -> None:
        if self.outside.parent.name.startswith("agent-canaries-"):
            shutil.rmtree(self.outside.parent, ignore_errors=True)
        for listener in (self.tcp, self.udp, self.unix, self.abstract):
            listener.stop()
        for listener in (self.tcp, self.udp, self.unix, self.abstract):
            listener.close()
        self.process.kill()
        self.process.wait()


CANARY_BASES = ("/srv", "/opt", "/var/lib")


def canary_home(tmp_path: Path) -> Path:
    """Where the host files live. As root: outside /tmp (which the sandbox covers with its own
    tmpfs, so canaries there would prove nothing) in a world-traversable directory, as a
    project or a home directory would be; the files are world-readable, as most files are."""
    base = next((b for b in CANARY_BASES if os.path.isdir(b) and os.access(b, os.W_OK)), None)
    if os.geteuid() != 0 or base is None:
        return tmp_path
    home = Path(base) / f"agent-canaries-{secrets.token_hex(6)}"
    home.mkdir(mode=0o755)
    return home


def make_canaries(tmp_path: Path) -> Canaries:
    outside = canary_home(tmp_path) / "outside"
    outside.mkdir()
    os.chmod(outside, 0o755)  # noqa: S103 - a world-readable canary, on purpose
    workspace = tmp_path / "ws"
    skills = workspace / "skills"
    skills.mkdir(parents=True)
    (skills / "helper.py").write_text("def helper():\n    return 1\n")
    canary = outside / "canary.txt"
    canary.write_text("CANARY\n")
    token = "SECRET-" + secrets.token_hex(8)
    secret = outside / "secret.txt"
    secret.write_text(token)
    env_token = "ENVSECRET-" + secrets.token_hex(8)
    os.environ["CANARY_API_KEY"] = env_token   # restored by the fixture
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix_path = outside / "host.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(unix_path))
    os.chmod(unix_path, 0o777)  # noqa: S103 - connectable by any uid: only the sandbox may stop it
    unix.listen(4)
    abstract_name = "canary-" + secrets.token_hex(6)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + abstract_name)
    abstract.listen(4)
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    c = Canaries(outside, workspace, skills, canary, secret, token, env_token,
                 _Listener(tcp, True), _Listener(udp, False), _Listener(unix, True),
                 _Listener(abstract, True), unix_path, abstract_name, process)
    c.before = c.snapshot()
    return c


def survivors(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker`` (processes a run left behind)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found
