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
import time
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
ROOT = os.geteuid() == 0
ROOT_CGROUP = ROOT and cgroup_available()
# rlimits-level process limits: RLIMIT_NPROC for a normal user, the pids cgroup for root.
PROC_LIMITED = ALL if (not ROOT or ROOT_CGROUP) else STRONG
# As root, every level runs the code as nobody in its own mount and pid namespaces: files that
# belong to another user, host processes and kernel knobs are out of reach even at rlimits.
# As an ordinary user, the rlimits level runs as that user: it reaches what the user reaches.
NOT_OWNER = ALL if ROOT else STRONG
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


def nothing_on_host(res: object, run_dir: Path) -> list[str]:
    """What the code wrote must be gone with the run: no file left in the run dir or the host's
    shared temporary directories, no setuid/setgid file anywhere under the workspace."""
    bad = [f"left in the run dir: {p.name}" for p in run_dir.iterdir()]
    for shared in ("/dev/shm", "/tmp", "/var/tmp"):
        bad += [f"left in {shared}: {p}" for p in Path(shared).glob("evil*")]
    for path in run_dir.parents[1].rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o6000:
            bad.append(f"setuid/setgid file on the host: {path}")
    return bad


def later(check: Check, seconds: float) -> Check:
    """Run ``check`` after ``seconds``: a time bomb must not go off after the run either."""
    def delayed(res: object, run_dir: Path) -> list[str]:
        time.sleep(seconds)
        return check(res, run_dir) if check else []
    return delayed


def both(*checks: Check) -> Check:
    return lambda res, run_dir: [p for c in checks for p in c(res, run_dir)]


@dataclass(frozen=True)
class Case:
    id: str
    code: str
    gate: Tier
    contained: frozenset[str]
    check: Check | None = None
    timeout: float = 5.0
    never_run_at: frozenset[str] = frozenset()   # escaping there would harm more than canaries
    grants: frozenset[str] = frozenset()          # runtime table: what the user approved


PY_SITE = sysconfig.get_paths()["purelib"]
CASES = [
    Case("write_outside", "open('$canary', 'w').write('pwned')", ASK, NOT_OWNER),
    Case("new_file_outside", "open('$outside/new.txt', 'x').write('pwned')", ASK, NOT_OWNER),
    Case("dotdot_traversal", "import os\np = '../' * 40 + '$canary'.lstrip('/')\n"
         "open(p, 'w').write('pwned')", ASK, NOT_OWNER),
    Case("planted_symlink_write", "import os\nos.symlink('$canary', 'link')\n"
         "open('link', 'w').write('pwned')", ASK, NOT_OWNER),
    Case("planted_symlink_dir", "import os\nos.symlink('$outside', 'evil_dir')\n"
         "os.symlink('$canary', 'evil_file')", ASK, ALL),
    Case("read_host_secret", "print(open('$secret').read())", ASK, STRONG),
    Case("read_etc_shadow", "print(open('/etc/shadow').read())", BLOCK, ALL,
         lambda r, _: ["shadow read"] if "root:" in r.stdout else []),
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
         "subprocess.run('echo pwned > $canary', shell=True)", BLOCK, NOT_OWNER),
    Case("subprocess_no_shell", "import subprocess\n"
         "subprocess.run(['cp', '/etc/hostname', '$canary'])", BLOCK, NOT_OWNER),
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
         BLOCK, NOT_OWNER),
    Case("subclasses_escape", "for c in ().__class__.__base__.__subclasses__():\n"
         "    if c.__name__ == '_wrap_close':\n"
         "        c.__init__.__globals__['system']('echo pwned > $canary')", BLOCK, NOT_OWNER),
    Case("importlib_built", "import importlib\nm = importlib.import_module('o' + 's')\n"
         "m.system('echo pwned > $canary')", BLOCK, NOT_OWNER),
    # as root, the rlimits level drops every capability, so ptrace of a full-caps process fails
    Case("ptrace_attach", "import ctypes\nr = ctypes.CDLL(None).ptrace(16, $pid, 0, 0)\n"
         "print('ESCAPED' if r == 0 else 'denied')", BLOCK, ALL if os.geteuid() == 0 else STRONG,
         said_denied),
    Case("kill_host_process", "import os, signal\nos.kill($pid, signal.SIGKILL)", BLOCK, NOT_OWNER),
    Case("unshare_userns", "import ctypes\nr = ctypes.CDLL(None).unshare(0x10000000)\n"
         "print('ESCAPED' if r == 0 else 'denied')", BLOCK, STRONG, said_denied),
    Case("write_proc_sys", "p = '/proc/sys/vm/swappiness'\nv = open(p).read()\n"
         "open(p, 'w').write(v)\nprint('ESCAPED')", BLOCK, NOT_OWNER, said_denied),
    Case("plant_conftest", "open('$skills/conftest.py', 'w').write('import os')", ASK, NOT_OWNER),
    Case("plant_sitecustomize", f"open('{PY_SITE}/sitecustomize.py', 'w').write('import os')",
         ASK, STRONG, never_run_at=frozenset({"rlimits"})),
    Case("del_time_bomb", "class T:\n    def __del__(self, _open=open):\n"
         "        _open('$canary', 'w').write('pwned')\nt = T()", BLOCK, NOT_OWNER),
    # --- what the gates do not cover: these pass every gate; only the runtime stops them ---
    Case("attrgetter_os_system", "import operator, os\np = '/'.join($outside_parts)\n"
         "f = operator.attrgetter('sys' + 'tem')(os)\nf('echo pwned > ' + p + '/' + 'canary.txt')",
         AUTO, NOT_OWNER),
    Case("string_built_open", "p = '/'.join([*$outside_parts, 'canary.txt'])\n"
         "fn = open\nfn(p, 'w').write('pwned')", AUTO, NOT_OWNER),
    Case("socket_via_asyncio", "import asyncio\nasync def go():\n"
         "    await asyncio.open_connection('127.0.0.1', $port)\nasyncio.run(go())",
         AUTO, STRONG),
    # --- round two: what a red team found (root via setuid, io_uring, encodings, ...) ---
    Case("setuid_copy", "import os, shutil, sys\nshutil.copy(sys.executable, 'evil_py')\n"
         "os.chmod('evil_py', 0o4755)", AUTO, NOT_OWNER, nothing_on_host),
    Case("setgid_on_create", "import os\nfd = os.open('evil_g', os.O_CREAT | os.O_WRONLY, 0o2755)\n"
         "print('ESCAPED' if os.fstat(fd).st_mode & 0o2000 else 'no')", AUTO, STRONG,
         both(said_denied, nothing_on_host)),
    Case("deep_tree_setuid", "import os, shutil, sys\nfd = os.open('.', os.O_RDONLY)\n"
         "for _ in range(3000):\n    os.mkdir('d', dir_fd=fd)\n"
         "    fd = os.open('d', os.O_RDONLY, dir_fd=fd)\n"
         "os.chdir(fd)\nshutil.copy(sys.executable, 'evil_py')\n"
         "try:\n    os.chmod('evil_py', 0o4755)\nexcept OSError:\n    pass", AUTO, ALL, nothing_on_host,
         10.0),
    Case("io_uring_setup", "import ctypes\nparams = ctypes.create_string_buffer(120)\n"
         "fd = ctypes.CDLL(None).syscall(425, 8, params)\nprint('ESCAPED' if fd >= 0 else 'denied')",
         BLOCK, STRONG, said_denied),
    Case("utf7_encoding", "# coding: utf-7\n+AAo-open(+ACI-$canary+ACI-, +ACI-w+ACI-).write(+ACI-pwned+ACI-)",
         BLOCK, NOT_OWNER),
    Case("posix_system", "import posix\nposix.system('echo pwned > $canary')", BLOCK, NOT_OWNER),
    Case("getattr_os_system", "import os\ngetattr(os, 'system')('echo pwned > $canary')", BLOCK,
         NOT_OWNER),
    Case("posix_decorator", "import posix\n@posix.system\ndef f():\n    pass", BLOCK, ALL),
    Case("timeit_runner", "import timeit\ntimeit.timeit(\"import os; os.system('echo pwned > $canary')\","
         " number=1)", BLOCK, NOT_OWNER),
    Case("cprofile_runner", "import cProfile\ncProfile.run(\"import os; os.system('echo pwned > $canary')\")",
         BLOCK, NOT_OWNER),
    Case("copy_reduce", "import copy, os\nclass E:\n    def __reduce__(self):\n"
         "        return (os.system, ('echo pwned > $canary',))\ncopy.copy(E())", BLOCK, NOT_OWNER),
    Case("codeop_function", "import codeop, types\n"
         "c = codeop.compile_command(\"open('$canary', 'w').write('pwned')\")\n"
         "types.FunctionType(c, {'open': open})()", BLOCK, NOT_OWNER),
    Case("children_memory", "import os\nfor _ in range(4):\n    if os.fork() == 0:\n"
         "        x = b'x' * (900 << 20)\n        import time; time.sleep(3)\n        os._exit(0)\n"
         "os.wait()", BLOCK, PROC_LIMITED, None, 3.0),
    Case("shm_fill", "import os\nf = open('/dev/shm/evil_fill', 'wb')\n"
         "for _ in range(512):\n    f.write(b'0' * (1 << 20))", BLOCK, NOT_OWNER, nothing_on_host),
    Case("tmp_fill", "import tempfile\nf = open(tempfile.gettempdir() + '/evil_fill', 'wb')\n"
         "for _ in range(512):\n    f.write(b'0' * (1 << 20))", ASK, NOT_OWNER, nothing_on_host),
    Case("disk_fill", "for i in range(8):\n    with open(f'evil_{i}', 'wb') as f:\n"
         "        for _ in range(60):\n            f.write(b'0' * (1 << 20))",
         AUTO, ALL if ROOT else frozenset({"bwrap"}), both(failed, nothing_on_host)),
    Case("inode_flood", "for i in range(20000):\n    open(f'evil_{i}', 'w').close()",
         AUTO, ALL if ROOT else frozenset({"bwrap"}), both(failed, nothing_on_host)),
    Case("cgroup_escape_time_bomb", "import os, time\nif os.fork() == 0:\n"
         "    for c in ('pids', 'memory', 'unified', ''):\n        try:\n"
         "            open(f'/sys/fs/cgroup/{c}/cgroup.procs', 'w').write(str(os.getpid()))\n"
         "        except OSError:\n            pass\n    os.setsid()\n    time.sleep(2)\n"
         "    open('$canary', 'a').write('boom')\n    os._exit(0)\nprint('parent done')",
         BLOCK, PROC_LIMITED, later(None, 2.5), 1.0),
    Case("unix_socket_with_network", "import socket\ns = socket.socket(socket.AF_UNIX)\n"
         "s.connect('$sock')", ASK, STRONG, grants=frozenset({"network"})),
    Case("abstract_socket_with_network", "import socket\ns = socket.socket(socket.AF_UNIX)\n"
         "s.connect('\\0$abstract')", ASK, STRONG, grants=frozenset({"network"})),
    Case("proc_mountinfo", "print('ESCAPED' if '/sys/fs/cgroup' in open('/proc/self/mountinfo').read() "
         "else 'no')", BLOCK, STRONG, said_denied),
    Case("proc_1_cmdline", "c = open('/proc/1/cmdline', 'rb').read()\n"
         "print('ESCAPED' if b'bw' b'rap' in c or b'--ro' b'-bind' in c else 'no')", BLOCK, ALL, said_denied),
    Case("stat_host_file", "import os\nos.stat('$secret')\nprint('ESCAPED')", ASK,
         frozenset({"bwrap"}), said_denied),
    Case("xattr_capability", "import os\nopen('f', 'w').close()\n"
         "os.setxattr('f', 'user.evil', b'1')\nprint('ESCAPED')", AUTO, STRONG, said_denied),
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


README = Path(__file__).resolve().parents[1] / "safety" / "README.md"
TABLE_START, TABLE_END = "<!-- containment table: generated from tests/test_safety_malicious.py -->", "<!-- end -->"


def containment_table() -> str:
    """The README's table, from the rows above: the strict xfails make each cell a measurement."""
    who = "root (code runs as nobody)" if ROOT else "an ordinary user"
    lines = [f"Measured as {who}. `contained`: the level alone stopped it (gates bypassed); "
             "`ESCAPES`: a strict xfail proves it gets through; `not run`: escaping would harm the host.",
             "", "| attack | gate | bwrap | landlock | rlimits |", "|---|---|---|---|---|"]
    for case in CASES:
        cells = ["not run" if lv in case.never_run_at else "contained" if lv in case.contained
                 else "**ESCAPES**" for lv in ("bwrap", "landlock", "rlimits")]
        lines.append(f"| `{case.id}` | {case.gate.name.lower()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_readme_table_is_the_measured_one() -> None:
    """safety/README.md shows exactly this table (regenerate: python -m tests.test_safety_malicious)."""
    if not ROOT:
        pytest.skip("the README's table is measured as root, as CI runs")
    text = README.read_text()
    shown = text[text.index(TABLE_START) + len(TABLE_START):text.index(TABLE_END)].strip()
    assert shown == containment_table(), "safety/README.md's table is stale: python -m tests.test_safety_malicious"


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 55
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
    box = Sandbox.probe(canaries.workspace, force_level=level, allow_unsandboxed=True)
    before = set(canaries.workspace.rglob("*"))
    res = box.run_python(["-c", code], cwd=run_dir, timeout=case.timeout,
                         readonly=[canaries.skills], grants=case.grants)
    problems = case.check(res, run_dir) if case.check else []   # first: some wait for a bomb
    problems += canaries.violations(res.stdout + res.stderr)
    problems += [f"process left behind: {p}" for p in survivors(marker)]
    problems += [f"created on the host, owned by root: {p}" for p in _root_owned(canaries.workspace, before)]
    assert not problems, (f"{problems}\n--- stdout ---\n{res.stdout[-800:]}"
                          f"\n--- stderr ---\n{res.stderr[-800:]}")


def _root_owned(workspace: Path, before: set[Path]) -> list[Path]:
    """Paths the run created under the workspace that belong to root (none should exist: the
    code runs as nobody, on a private tmpfs that vanishes with it)."""
    return [p for p in set(workspace.rglob("*")) - before if p.lstat().st_uid == 0] if ROOT else []


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


if __name__ == "__main__":   # rewrite safety/README.md's table from the rows
    text = README.read_text()
    head, rest = text.split(TABLE_START)
    README.write_text(f"{head}{TABLE_START}\n{containment_table()}\n{TABLE_END}{rest.split(TABLE_END, 1)[1]}")
