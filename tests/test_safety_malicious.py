"""The malicious-snippet table: each row says what the gates must say, and at which sandbox
levels the runtime alone must contain it. Two columns, two tests:

* ``test_through_run_generated``: the path a skill takes (gates, approvals with --yes so
  tier 2 runs, sandbox at the best level). Tier 3 must never run; whatever runs must leave
  every canary untouched.
* ``test_runtime_alone``: the gates bypassed, the snippet run straight in the sandbox at each
  available level. Where a level does not contain a snippet, the row says so and the test is
  a strict xfail: it proves the escape the README documents.

Rows with ``gate=Tier.AUTO`` and an escape only the runtime stops are the "what the gates do
not cover" section (see GATES_DO_NOT_COVER and safety/README.md).
"""

from __future__ import annotations

import os
import secrets
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

import pytest

from safety import Approvals, Decision, JsonGrantStore, Sandbox, Tier, available_levels, check_code, run_generated
from safety.cgroup import available as cgroup_available
from tests.safety_fixtures import Canaries, make_canaries, survivors

AUTO, ASK, BLOCK = Tier.AUTO, Tier.APPROVAL, Tier.BLOCKED
ALL = frozenset({"bwrap", "landlock", "rlimits"})
STRONG = frozenset({"bwrap", "landlock"})
ROOT_CGROUP = os.geteuid() == 0 and cgroup_available()
# rlimits-level process limits: RLIMIT_NPROC for a normal user, the pids cgroup for root.
PROC_LIMITED = ALL if (os.geteuid() != 0 or ROOT_CGROUP) else STRONG
Check = Callable[[object, Path], list[str]]


def timed_out(res: object, _: Path) -> list[str]:
    return [] if res.timed_out else ["expected the wall timeout to kill it"]


def failed(res: object, _: Path) -> list[str]:
    return [] if res.returncode not in (0, None) or res.timed_out else ["expected it to fail"]


def capped(res: object, _: Path) -> list[str]:
    return [] if len(res.stdout) <= 64_000 and res.truncated else ["stdout not capped"]


def no_huge_file(_: object, run_dir: Path) -> list[str]:
    big = [p for p in run_dir.rglob("*") if p.is_file() and p.stat().st_size > 64 << 20]
    return [f"file over the size limit: {big}"] if big else []


def said_denied(res: object, _: Path) -> list[str]:
    return [] if "ESCAPED" not in res.stdout else ["the call succeeded (ESCAPED)"]


@dataclass(frozen=True)
class Case:
    id: str
    code: str
    gate: Tier
    contained: frozenset[str]
    check: Check | None = None
    timeout: float = 5.0
    never_run_at: frozenset[str] = frozenset()   # escaping there would harm more than canaries


PY_SITE = sysconfig.get_paths()["purelib"]
CASES = [
    Case("write_outside", "open('$canary', 'w').write('pwned')", ASK, STRONG),
    Case("new_file_outside", "open('$outside/new.txt', 'x').write('pwned')", ASK, STRONG),
    Case("dotdot_traversal", "import os\np = '../' * 40 + '$canary'.lstrip('/')\n"
         "open(p, 'w').write('pwned')", ASK, STRONG),
    Case("planted_symlink_write", "import os\nos.symlink('$canary', 'link')\n"
         "open('link', 'w').write('pwned')", ASK, STRONG),
    Case("planted_symlink_dir", "import os\nos.symlink('$outside', 'evil_dir')\n"
         "os.symlink('$canary', 'evil_file')", ASK, ALL),
    Case("read_host_secret", "print(open('$secret').read())", ASK, STRONG),
    Case("read_etc_shadow", "print(open('/etc/shadow').read())", BLOCK, STRONG
         if os.geteuid() == 0 else ALL, lambda r, _: ["shadow read"] if "root:" in r.stdout else []),
    Case("dump_environment", "import os\nprint(dict(os.environ))", AUTO, ALL),
    # as root, reading another process's environ needs the capabilities the rlimits level drops
    Case("parent_environ", "print(open('/proc/$pid/environ').read())",
         BLOCK, ALL if os.geteuid() == 0 else STRONG),
    Case("tcp_loopback", "import socket\ns = socket.create_connection(('127.0.0.1', $port), 2)",
         ASK, STRONG),
    Case("http_loopback", "import urllib.request\n"
         "urllib.request.urlopen('http://127.0.0.1:$port/', timeout=2)", ASK, STRONG),
    Case("udp_out", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "s.sendto(b'x', ('127.0.0.1', $udp_port))", ASK, STRONG),
    Case("dns_query", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "s.sendto(bytes.fromhex('abcd01000001000000000000076578616d706c6503636f6d0000010001'),"
         " ('127.0.0.1', $udp_port))", ASK, STRONG),
    Case("host_unix_socket", "import socket\ns = socket.socket(socket.AF_UNIX)\n"
         "s.connect('$sock')", ASK, STRONG),
    Case("abstract_unix_socket", "import socket\ns = socket.socket(socket.AF_UNIX)\n"
         "s.connect('\\0$abstract')", ASK, STRONG),
    Case("shell_true", "import subprocess\n"
         "subprocess.run('echo pwned > $canary', shell=True)", BLOCK, STRONG),
    Case("subprocess_no_shell", "import subprocess\n"
         "subprocess.run(['cp', '/etc/hostname', '$canary'])", BLOCK, STRONG),
    Case("fork_bomb", "import os\nwhile True:\n    try:\n        os.fork()\n"
         "    except OSError:\n        pass", BLOCK, PROC_LIMITED, timed_out, 2.0,
         never_run_at=ALL - PROC_LIMITED),
    Case("memory_bomb", "x = bytearray(16 << 30)\nprint(len(x))", AUTO, ALL, failed),
    Case("cpu_spin", "while True:\n    pass", AUTO, ALL, timed_out, 1.0),
    Case("sleep_forever", "import time\ntime.sleep(10 ** 6)", AUTO, ALL, timed_out, 1.0),
    Case("setsid_daemon", "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
         "    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\nprint('parent done')",
         BLOCK, PROC_LIMITED),
    Case("huge_file", "with open('big.bin', 'wb') as f:\n    for _ in range(1024):\n"
         "        f.write(b'0' * (1 << 20))", AUTO, ALL, no_huge_file),
    Case("stdout_flood", "import sys\nwhile True:\n    sys.stdout.write('x' * 4096)", AUTO, ALL,
         capped, 5.0),
    Case("ctypes_system", "import ctypes\nctypes.CDLL(None).system(b'echo pwned > $canary')",
         BLOCK, STRONG),
    Case("subclasses_escape", "for c in ().__class__.__base__.__subclasses__():\n"
         "    if c.__name__ == '_wrap_close':\n"
         "        c.__init__.__globals__['system']('echo pwned > $canary')", BLOCK, STRONG),
    Case("importlib_built", "import importlib\nm = importlib.import_module('o' + 's')\n"
         "m.system('echo pwned > $canary')", BLOCK, STRONG),
    # as root, the rlimits level drops every capability, so ptrace of a full-caps process fails
    Case("ptrace_attach", "import ctypes\nr = ctypes.CDLL(None).ptrace(16, $pid, 0, 0)\n"
         "print('ESCAPED' if r == 0 else 'denied')", BLOCK, ALL if os.geteuid() == 0 else STRONG,
         said_denied),
    Case("kill_host_process", "import os, signal\nos.kill($pid, signal.SIGKILL)", BLOCK, STRONG),
    Case("unshare_userns", "import ctypes\nr = ctypes.CDLL(None).unshare(0x10000000)\n"
         "print('ESCAPED' if r == 0 else 'denied')", BLOCK, STRONG, said_denied),
    Case("write_proc_sys", "p = '/proc/sys/vm/swappiness'\nv = open(p).read()\n"
         "open(p, 'w').write(v)\nprint('ESCAPED')", BLOCK, STRONG, said_denied),
    Case("plant_conftest", "open('$skills/conftest.py', 'w').write('import os')", ASK, STRONG),
    Case("plant_sitecustomize", f"open('{PY_SITE}/sitecustomize.py', 'w').write('import os')",
         ASK, STRONG, never_run_at=frozenset({"rlimits"})),
    Case("del_time_bomb", "class T:\n    def __del__(self, _open=open):\n"
         "        _open('$canary', 'w').write('pwned')\nt = T()", BLOCK, STRONG),
    # --- what the gates do not cover: these pass every gate; only the runtime stops them ---
    Case("attrgetter_os_system", "import operator, os\np = '/'.join($outside_parts)\n"
         "f = operator.attrgetter('sys' + 'tem')(os)\nf('echo pwned > ' + p + '/' + 'canary.txt')",
         AUTO, STRONG),
    Case("string_built_open", "p = '/'.join([*$outside_parts, 'canary.txt'])\n"
         "fn = open\nfn(p, 'w').write('pwned')", AUTO, STRONG),
    Case("socket_via_asyncio", "import asyncio\nasync def go():\n"
         "    await asyncio.open_connection('127.0.0.1', $port)\nasyncio.run(go())",
         AUTO, STRONG),
]
GATES_DO_NOT_COVER = ("attrgetter_os_system", "string_built_open", "socket_via_asyncio",
                      "memory_bomb", "cpu_spin", "sleep_forever", "huge_file", "stdout_flood")
LEVELS = available_levels()


def render(case: Case, canaries: Canaries) -> str:
    return Template(case.code).substitute(canaries.values)


@pytest.fixture
def canaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CANARY_API_KEY", "placeholder")
    c = make_canaries(tmp_path)
    yield c
    c.close()


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    for name in GATES_DO_NOT_COVER:
        assert next(c for c in CASES if c.id == name).gate == Tier.AUTO


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gate_verdict(case: Case, tmp_path: Path) -> None:
    c_values = {"outside": "/tmp/o", "canary": "/tmp/o/canary.txt", "secret": "/tmp/o/s",
                "port": 1, "udp_port": 2, "sock": "/tmp/o/s.sock", "abstract": "a", "pid": 1,
                "skills": "/tmp/ws/skills", "outside_parts": ["", "tmp", "o"]}
    verdict = check_code(Template(case.code).substitute(c_values), with_bandit=False)
    assert verdict.tier == case.gate, verdict.summary()


def _levels_for(case: Case) -> list:
    params = []
    for level in ("bwrap", "landlock", "rlimits"):
        marks = []
        if level not in LEVELS:
            marks.append(pytest.mark.skip(reason=f"{level} is not available on this machine"))
        elif level in case.never_run_at:
            marks.append(pytest.mark.skip(reason=f"not contained at {level}; escaping would "
                                          "harm the host beyond the canaries (documented)"))
        elif level not in case.contained:
            marks.append(pytest.mark.xfail(strict=True, reason=f"documented: {level} does not "
                                           "contain this"))
        params.append(pytest.param(case, level, marks=marks, id=f"{case.id}-{level}"))
    return params


@pytest.mark.parametrize(("case", "level"), [p for c in CASES for p in _levels_for(c)])
def test_runtime_alone(case: Case, level: str, canaries: Canaries) -> None:
    """Gates bypassed: the sandbox level by itself must contain the snippet."""
    marker = "MARK" + secrets.token_hex(6)
    code = render(case, canaries) + f"\n# {marker}\n"
    run_dir = canaries.workspace / "exec" / f"run-{marker}"
    run_dir.mkdir(parents=True)
    box = Sandbox.probe(canaries.workspace, force_level=level)
    res = box.run_python(["-c", code], cwd=run_dir, timeout=case.timeout,
                         readonly=[canaries.skills], writable=[run_dir])
    problems = canaries.violations(res.stdout + res.stderr)
    problems += [f"process left behind: {p}" for p in survivors(marker)]
    problems += case.check(res, run_dir) if case.check else []
    assert not problems, (f"{problems}\n--- stdout ---\n{res.stdout[-800:]}"
                          f"\n--- stderr ---\n{res.stderr[-800:]}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_through_run_generated(case: Case, canaries: Canaries) -> None:
    """The path a skill takes. The user approves every need but "network" (a granted network
    is network: the sandbox shares it); tier 3 never runs; whatever runs stays contained."""
    box = Sandbox.probe(canaries.workspace)
    if box.level not in case.contained:
        pytest.skip(f"best level here is {box.level}, which does not contain {case.id}")
    marker = "evil_" + secrets.token_hex(6)
    approvals = Approvals(JsonGrantStore(canaries.workspace / "grants.json"),
                          canaries.workspace / "history" / "audit.jsonl",
                          ask=lambda req: Decision.DENY if req.need == "network" else Decision.ONCE)
    outcome = run_generated(name=marker, module_source=render(case, canaries),
                            test_source="def test_nothing():\n    pass\n",
                            workspace=canaries.workspace, sandbox=box, approvals=approvals,
                            timeout=case.timeout, skills_dir=canaries.skills)
    assert outcome.verdict.tier == case.gate
    assert outcome.blocked == (case.gate == Tier.BLOCKED or "network" in outcome.verdict.needs)
    output = outcome.run.output if outcome.run else ""
    problems = canaries.violations(output) + [f"left behind: {p}" for p in survivors(marker)]
    assert not problems, f"{problems}\n{output[-1500:]}"
    exec_root = canaries.workspace / "exec"
    assert not exec_root.exists() or not list(exec_root.iterdir()), "exec dir not removed"
