"""Warm test runs (safety/warm.py, safety/_worker.py): a directive's test runs share one bwrap
sandbox, each in a fresh child. Tested as classes: the same outcome as a cold run, nothing a run
leaves (processes, files anywhere the sandbox may write, IPC objects, a changed mode) reaches the
next run, the worker's channel is out of the code's reach, and a run that kills or stops the
worker fails alone."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import safety
from agent.core import AutonomousAgent
from safety.sandbox import Sandbox, available_levels
from tests.conftest import FakeModel

pytestmark = pytest.mark.skipif("bwrap" not in available_levels(), reason="warm runs need bubblewrap")

CODE = 'def add(a: int, b: int) -> int:\n    """Add.\n\n    >>> add(1, 2)\n    3\n    """\n    return a + b\n'


def run(box: Sandbox, workspace: Path, test: str, *, module: str = CODE, timeout: float = 10.0) -> safety.TestRun:
    """A test run past the gates (what the gates never see is the point here): warm inside a
    session, cold outside one."""
    return safety._run_in_exec_dir("add", module, {"test_add.py": textwrap.dedent(test)}, workspace, box,
                                   timeout, None, frozenset())


@pytest.fixture
def box(tmp_path):
    sandbox = Sandbox.probe(tmp_path)
    assert sandbox.level == "bwrap"
    return sandbox


# -- the same outcome as a cold run ---------------------------------------------------------

SAME = [
    ("passes", "from add import add\ndef test_a():\n    assert add(2, 2) == 4\n", (2, 0, 0), 0),
    ("fails", "from add import add\ndef test_a():\n    assert add(2, 2) == 5\n", (1, 1, 0), 1),
    ("collection_error", "from add import nothing\ndef test_a():\n    pass\n", (0, 0, 2), 2),
    ("exits_hard", "import os\ndef test_a():\n    os._exit(0)\n", (0, 0, 0), 0),
    ("raises_systemexit", "import sys\nsys.exit(3)\n", (0, 0, 1), 3),
    ("waits_for_threads", "import threading, time\nfrom add import add\ndef test_a():\n"
     "    threading.Thread(target=time.sleep, args=(60,)).start()\n    assert add(1, 1) == 2\n", None, None),
    ("atexit_exit_code", "import atexit, os\natexit.register(lambda: os._exit(3))\ndef test_a():\n    pass\n",
     (2, 0, 1), 3),
    ("prints_a_fake_summary", "def test_a():\n    print('=== 9 passed in 0.01s ===')\n    assert False\n",
     (1, 1, 0), 1),
]


@pytest.mark.parametrize(("test", "counts", "code"), [row[1:] for row in SAME], ids=[row[0] for row in SAME])
def test_warm_and_cold_runs_agree(box, tmp_path, test, counts, code):
    cold = run(box, tmp_path, test, timeout=3)
    with box.session():
        warm = run(box, tmp_path, test, timeout=3)
    if counts is None:   # timed out
        assert cold.timed_out and warm.timed_out and not cold.ok and not warm.ok
        return
    assert (cold.passed, cold.failed, cold.errors) == counts
    assert (warm.passed, warm.failed, warm.errors) == counts
    assert (cold.returncode, warm.returncode) == (code, code)
    assert box._pool.started == 1


@pytest.mark.parametrize("name", ["fractions", "hypothesis", "typeguard", "queue"])
def test_a_skill_named_like_a_module_the_worker_loaded_is_the_skill(box, tmp_path, name):
    module = f"def {name}(a: int) -> int:\n    return a + 1\n"
    test = f"from {name} import {name}\ndef test_a():\n    assert {name}(1) == 2\n"
    cold = safety._run_in_exec_dir(name, module, {f"test_{name}.py": test}, tmp_path, box, 10, None, frozenset())
    with box.session():
        warm = safety._run_in_exec_dir(name, module, {f"test_{name}.py": test}, tmp_path, box, 10, None, frozenset())
    assert cold.ok, cold.output
    assert warm.ok, warm.output


def test_a_run_past_its_time_is_killed_and_the_next_one_runs(box, tmp_path):
    with box.session():
        slow = run(box, tmp_path, "import time\ndef test_a():\n    time.sleep(30)\n", timeout=1.5)
        after = run(box, tmp_path, "from add import add\ndef test_a():\n    assert add(1, 1) == 2\n")
    assert slow.timed_out and not slow.ok and slow.seconds < 10
    assert after.ok


def test_output_is_capped(box, tmp_path):
    with box.session():
        flood = run(box, tmp_path, "def test_a():\n    print('x' * 5_000_000)\n    assert False\n", timeout=10)
    assert len(flood.output) < 200_000 and "[sandbox] output truncated" in flood.output


# -- nothing of a run reaches the next one --------------------------------------------------

# (what the first run leaves, what the second run asserts). Each first run passes or fails as it
# likes; the second must pass: it sees nothing the first one left.
LEFTOVERS = {
    "file_in_tmp": ("open('/tmp/left', 'w').write('x')", "assert not os.path.exists('/tmp/left')"),
    "file_in_dev_shm": ("open('/dev/shm/left', 'w').write('x')", "assert not os.listdir('/dev/shm')"),
    "file_in_root": ("open('/left', 'w').write('x')", "assert not os.path.exists('/left')"),
    "ld_so_preload": ("open('/etc/ld.so.preload', 'w').write('/tmp/x.so')",
                      "assert not os.path.exists('/etc/ld.so.preload')"),
    "file_in_dev": ("open('/dev/left', 'w').write('x')", "assert not os.path.exists('/dev/left')"),
    "file_beside_the_run": ("open('../left', 'w').write('x')",
                            "assert [p for p in os.listdir('..') if p != os.path.basename(os.getcwd())] == []"),
    "file_in_a_bind_parent": ("open(os.path.dirname(os.path.dirname(os.getcwd())) + '/left', 'w').write('x')",
                              "assert not os.path.exists(os.path.dirname(os.path.dirname(os.getcwd())) + '/left')"),
    "locked_directory": ("os.makedirs('/tmp/a/b'); open('/tmp/a/b/f', 'w').write('x'); os.chmod('/tmp/a/b', 0); "
                         "os.chmod('/tmp/a', 0)", "assert not os.path.exists('/tmp/a')"),
    "tmp_made_unwritable": ("os.chmod('/tmp', 0o500)", "open('/tmp/ok', 'w').write('x')"),
    "background_process": (
        "import subprocess, sys\n"
        "    subprocess.Popen([sys.executable, '-c', 'import os, time\\n"
        "while True:\\n    open(\"/tmp/alive\", \"w\").close()\\n    time.sleep(0.01)'], start_new_session=True)\n"
        "    import time; time.sleep(0.3)",
        "import time; time.sleep(0.3); assert not os.path.exists('/tmp/alive')"),
    "forked_daemon": (
        "if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n            import time\n"
        "            while True:\n                open('/tmp/alive', 'w').close(); time.sleep(0.01)\n"
        "        os._exit(0)\n    import time; time.sleep(0.2)",
        "import time; time.sleep(0.3); assert not os.path.exists('/tmp/alive')"),
    "replaced_dev_link": ("os.unlink('/dev/fd'); os.symlink('/tmp', '/dev/fd')",
                          "assert os.readlink('/dev/fd') == '/proc/self/fd'"),
}


@pytest.mark.parametrize("name", sorted(LEFTOVERS))
def test_nothing_a_run_leaves_reaches_the_next(box, tmp_path, name):
    leave, check = LEFTOVERS[name]
    first = f"import os\ndef test_leave():\n    {leave}\n"
    second = f"import os\ndef test_check():\n    {check}\n"
    with box.session():
        run(box, tmp_path, first)
        after = run(box, tmp_path, second)
        again = run(box, tmp_path, second)
    assert after.ok, after.output
    assert again.ok, again.output


IPC = {
    "sysv_shared_memory": "libc.shmget(0, 4096, 0o1666)",
    "sysv_semaphore": "libc.semget(0, 1, 0o1666)",
    "sysv_message_queue": "libc.msgget(0, 0o1666)",
    "posix_message_queue": "libc.mq_open(b'/left', 0o100 | 2, 0o600, None)",
}


@pytest.mark.parametrize("name", sorted(IPC))
def test_kernel_objects_that_outlive_processes_are_refused(box, tmp_path, name):
    test = (f"import ctypes, ctypes.util\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"def test_ipc():\n    assert {IPC[name]} == -1 and ctypes.get_errno() == 1\n")
    with box.session():
        assert run(box, tmp_path, test).ok
    assert run(box, tmp_path, test).ok   # cold runs share the seccomp filter


def test_the_code_cannot_write_the_workers_replies(box, tmp_path):
    forge = json.dumps({"returncode": 0, "stdout": "1 passed in 0.01s", "stderr": "", "timed_out": False,
                        "truncated": False})
    test = textwrap.dedent(f"""\
        import os
        def test_forge():
            for fd in range(0, 256):   # pytest's own capture files are among them: harmless
                try:
                    os.write(fd, {forge!r}.encode() + b"\\n")
                except OSError:
                    pass
            assert False, "the real result: failed"
        """)
    with box.session():
        result = run(box, tmp_path, test)
        after = run(box, tmp_path, "from add import add\ndef test_a():\n    assert add(1, 1) == 2\n")
    assert (result.failed, result.returncode) == (1, 1) and "the real result: failed" in result.output
    assert after.ok and after.output.count("passed") == 1


def test_a_run_that_kills_the_worker_fails_alone(box, tmp_path):
    with box.session():
        killed = run(box, tmp_path, "import os, signal\ndef test_a():\n    os.kill(os.getppid(), signal.SIGKILL)\n")
        after = run(box, tmp_path, "from add import add\ndef test_a():\n    assert add(1, 1) == 2\n")
    assert not killed.ok and "stopped before the run ended" in killed.output
    assert after.ok and box._pool.started == 2


def test_a_run_that_stops_the_worker_times_out(box, tmp_path):
    with box.session():
        stopped = run(box, tmp_path, "import os, signal\ndef test_a():\n    os.kill(os.getppid(), signal.SIGSTOP)\n",
                      timeout=1)
        after = run(box, tmp_path, "from add import add\ndef test_a():\n    assert add(1, 1) == 2\n")
    assert stopped.timed_out and not stopped.ok
    assert after.ok


CHANGE_THE_WORKER = {
    "rlimit": "resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (20, 20))",
    "file_size": "resource.prlimit(os.getppid(), resource.RLIMIT_FSIZE, (1, 1))",
    "nice": "os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)",
    "affinity": "os.sched_setaffinity(os.getppid(), {0})",
    "scheduler": "os.sched_setscheduler(os.getppid(), os.SCHED_IDLE, os.sched_param(0))",
    "whole_group": "os.setpriority(os.PRIO_PGRP, 0, 19)",
}


@pytest.mark.parametrize("name", sorted(CHANGE_THE_WORKER))
def test_a_run_cannot_change_the_workers_limits_or_scheduling_for_the_next(box, tmp_path, name):
    change = CHANGE_THE_WORKER[name]
    check = ("import os, resource\ndef test_check():\n"
             "    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (256, 256)\n"
             "    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] > 1\n"
             "    assert os.getpriority(os.PRIO_PROCESS, 0) == 0\n"
             "    assert os.sched_getscheduler(0) == os.SCHED_OTHER\n")
    with box.session():
        run(box, tmp_path, f"import os, resource\ndef test_change():\n    try:\n        {change}\n"
                           "    except OSError:\n        pass\n")
        after = run(box, tmp_path, check)
    assert after.ok, after.output


def test_an_interrupted_run_leaves_no_worker(box, tmp_path, monkeypatch):
    from safety import warm
    real = warm.WarmWorker._read
    calls = []

    def interrupted(self, timeout=warm.START_TIMEOUT):
        calls.append(timeout)
        if len(calls) == 3:   # ready, forked, then Ctrl+C while waiting for the result
            raise KeyboardInterrupt
        return real(self, timeout)

    monkeypatch.setattr(warm.WarmWorker, "_read", interrupted)
    with pytest.raises(KeyboardInterrupt), box.session():
        run(box, tmp_path, "import time\ndef test_a():\n    time.sleep(5)\n")
    assert not list((tmp_path / "exec").glob("warm-*"))
    assert box._pool._idle == {}


def test_a_session_leaves_no_worker_and_no_directory(box, tmp_path):
    with box.session():
        run(box, tmp_path, "def test_a():\n    pass\n")
        workers = [w for idle in box._pool._idle.values() for w in idle]
        assert len(workers) == 1 and workers[0].alive
    assert not workers[0].alive
    assert not list((tmp_path / "exec").glob("warm-*"))
    assert box._pool._idle == {}


def test_outside_a_session_or_switched_off_runs_are_cold(box, tmp_path):
    assert box.run_warm({"test_a.py": "def test_a():\n    pass\n"}, ["test_a.py"]) is None
    box.warm = False
    with box.session():
        assert run(box, tmp_path, "def test_a():\n    pass\n").ok
    assert box._pool.started == 0


def test_a_directive_starts_one_worker_for_all_its_iterations(tmp_path):
    plan = json.dumps({
        "name": "add_numbers", "signature": "add_numbers(a: int, b: int) -> int", "description": "Add two integers.",
        "examples": [{"call": "add_numbers(1, 2)", "result": "3"}],
        "tests": "from add_numbers import add_numbers\n\ndef test_add():\n    assert add_numbers(2, 2) == 4\n"})
    wrong = "```python\ndef add_numbers(a: int, b: int) -> int:\n    return a - b\n```"
    good = "```python\ndef add_numbers(a: int, b: int) -> int:\n    return a + b\n```"
    agent = AutonomousAgent(workspace=tmp_path / "ws", model=FakeModel([plan, wrong, good]))
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.iterations) == ("working", 2)
    assert agent.sandbox._pool.started == 1 and agent.sandbox._pool.sessions == 0
    assert not list((tmp_path / "ws" / "exec").glob("warm-*"))
