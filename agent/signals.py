"""The signals that end the command line (SIGTERM, SIGHUP; Ctrl+C in a scripted run) the way
Ctrl+C ends a directive: recorded ``interrupted``, resumable, one line, exit 128 + the signal.

Only the CLI entry installs these handlers (``ending``), and it puts the previous ones back when
it returns: a program that uses ``AutonomousAgent`` as a library keeps its own.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

ENDING = (signal.SIGTERM, signal.SIGHUP)  # what systemd, docker, CI and a closed terminal send


class Terminated(KeyboardInterrupt):
    """A signal asked the process to end. It is raised where the main thread is, as Ctrl+C's
    KeyboardInterrupt is, so a running directive is recorded ``interrupted`` on the way out (see
    ``AutonomousAgent.run``). ``detail`` says what was left to resume, for the one line shown."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.detail = ""
        super().__init__(f"Stopped by {signal.Signals(signum).name}")

    @property
    def status(self) -> int:
        """The exit status: 128 + the signal's number (SIGINT 130, SIGTERM 143, SIGHUP 129)."""
        return 128 + self.signum

    def line(self) -> str:
        return f"{self}: {self.detail}" if self.detail else f"{self}."


def heeded(signums: tuple[int, ...]) -> tuple[int, ...]:
    """``signums`` less those the process was started ignoring (``nohup`` ignores SIGHUP, a shell
    ignores SIGINT in a background job): those stay ignored."""
    return tuple(signum for signum in signums if signal.getsignal(signum) is not signal.SIG_IGN)


@contextlib.contextmanager
def ending(signums: tuple[int, ...] = ENDING) -> Iterator[None]:
    """While inside, each of ``signums`` (not ignored: see ``heeded``) raises ``Terminated`` in the
    main thread, once: a second signal while the first one's ending is being recorded is ignored,
    so the record is not cut short. The previous handlers are back afterwards. Outside the main
    thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        raise Terminated(signum)

    previous = {signum: signal.signal(signum, handler) for signum in heeded(signums)}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, signal.SIG_DFL if before is None else before)
