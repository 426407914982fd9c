"""The static gates, spelling by spelling: what each rule blocks, and what must stay tier 1.

The gates are triage, not the boundary (the sandbox is). These rows pin the spellings that
once passed as tier 1: other names of ``os`` (posix, nt), names taken by ``getattr``, modules
that run code from strings, hooks that run after the tests, and source the gates would read
differently from Python (an encoding declaration, a NUL byte, a syntax error).
"""

from __future__ import annotations

import ast
import codecs
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checks import property_tests
from safety import Approvals, JsonGrantStore, Sandbox, Tier, check_code, run_generated
from safety.policy import check_block_entry

B, A, I = Tier.BLOCKED, Tier.APPROVAL, Tier.AUTO  # noqa: E741 - short tier names keep the table readable

# `# coding: utf-7` and, in a comment (all the gates see when they read UTF-8), the UTF-7 for
# "\nimport os\nos.system('id')\n": Python decodes the file as UTF-7 and runs it.
UTF7_PAYLOAD = ("# coding: utf-7\n"
                "x = 1  # +AAoAaQBtAHAAbwByAHQAIABvAHMACgBvAHMALgBzAHkAcwB0AGUAbQAoACcAaQBkACcAKQAK-\n")

ROWS = [
    # -- source the gates would not read as Python does
    ("utf7_payload", UTF7_PAYLOAD, B, "encoding_declaration"),
    ("latin1_declaration", "# -*- coding: latin-1 -*-\nx = 'caf\u00e9'\n", B, "encoding_declaration"),
    ("unknown_codec", "# coding: no-such-codec\nx = 1\n", B, "encoding_declaration"),
    ("vim_declaration_line_2", "#!/usr/bin/env python\n# vim: set fileencoding=utf-16 :\nx = 1\n", B,
     "encoding_declaration"),
    ("cr_separated_lines", "#!python\r# coding: utf-7\rx = 1\r", B, "encoding_declaration"),
    ("nul_byte", "x = 1\0\n", B, "nul_byte"),
    ("syntax_error", "def f(:\n    return 1\n", B, "unparsable"),
    ("lone_surrogate", "x = 1\ny = '\ud800'\n", B, "unparsable"),
    # -- other names of os
    ("posix_system", "import posix\nposix.system('id')", B, "os_system"),
    ("posix_alias", "import posix as p\np.system", B, "os_system"),
    ("nt_system", "import nt\nnt.system('id')", B, "os_system"),
    ("from_posix_import", "from posix import system\nsystem('id')", B, "os_system"),
    ("posix_execv", "import posix\nposix.execv('/bin/sh', ['sh'])", B, "os_exec"),
    ("posix_spawnv", "import posix\nposix.spawnv(0, 'sh', ['sh'])", B, "os_spawn"),
    ("posix_posix_spawn", "import posix\nposix.posix_spawn('sh', ['sh'], {})", B, "os_posix_spawn"),
    ("import_os_path_binds_os", "import os.path\nos.fork()", B, "os_fork"),
    ("star_import_os", "from os import *\nsystem('id')", B, "star_import"),
    ("rebound_module", "import os\nm = os\nm.system('id')", B, "os_system"),
    # -- names taken by name
    ("getattr_constant", "import os\ngetattr(os, 'system')('id')", B, "os_system"),
    ("setattr_constant", "import posix\nsetattr(posix, 'system', print)", B, "os_system"),
    ("decorator", "import posix\n@posix.system\ndef f():\n    pass", B, "os_system"),
    ("attrgetter_constant", "import operator, os\noperator.attrgetter('system')(os)('id')", B,
     "dangerous_attribute_name"),
    ("methodcaller_constant", "import os\nfrom operator import methodcaller\nmethodcaller('system', 'id')(os)", B,
     "dangerous_attribute_name"),
    ("partial_os_system", "import functools, os\nfunctools.partial(os.system, 'id')()", B, "os_system"),
    ("os_dict", "import os\nos.__dict__['system']('id')", B, "dunder_attribute"),
    ("vars_os", "import os\nvars(os)['system']('id')", B, "builtin_vars"),
    # -- modules that run code from strings or code objects
    ("timeit_call", "import timeit\ntimeit.timeit('1 + 1')", B, "import_timeit"),
    ("from_timeit", "from timeit import timeit", B, "import_timeit"),
    ("cprofile_run", "import cProfile\ncProfile.run('1 + 1')", B, "import_cProfile"),
    ("profile_run", "import profile\nprofile.run('1 + 1')", B, "import_profile"),
    ("trace_module", "import trace\ntrace.Trace().run('1 + 1')", B, "import_trace"),
    ("doctest_run", "import doctest\ndoctest.run_docstring_examples(f, {})", B, "import_doctest"),
    ("doctest_testmod", "import doctest\ndoctest.testmod()", B, "import_doctest"),
    ("code_interact", "import code\ncode.InteractiveInterpreter().runsource('1')", B, "import_code"),
    ("codeop", "import codeop\ncodeop.compile_command('1')", B, "import_codeop"),
    ("types_function_type", "import types\ntypes.FunctionType(c, {})", B, "types_FunctionType"),
    ("types_code_type", "from types import CodeType", B, "types_CodeType"),
    ("runpy", "import runpy\nrunpy.run_path('x.py')", B, "import_runpy"),
    ("pdb", "import pdb\npdb.run('1')", B, "import_pdb"),
    ("bdb", "import bdb", B, "import_bdb"),
    ("copyreg", "import copyreg\ncopyreg.pickle(A, f)", B, "import_copyreg"),
    ("reduce_method", "import copy\nclass A:\n    def __reduce__(self):\n        return (print, ('x',))\n"
     "copy.copy(A())", B, "blocked_method"),
    ("setstate_method", "class A:\n    def __setstate__(self, state):\n        pass", B, "blocked_method"),
    # -- processes and hooks
    ("multiprocessing", "import multiprocessing\nmultiprocessing.Process(target=f).start()", A,
     "import_multiprocessing"),
    ("asyncio_subprocess_exec", "import asyncio\nasyncio.create_subprocess_exec('ls')", A,
     "asyncio_create_subprocess_exec"),
    ("asyncio_subprocess_shell", "import asyncio\nasyncio.create_subprocess_shell('ls')", B,
     "asyncio_create_subprocess_shell"),
    ("process_pool", "from concurrent.futures import ProcessPoolExecutor", A,
     "concurrent_futures_ProcessPoolExecutor"),
    ("posixsubprocess", "import _posixsubprocess", B, "import__posixsubprocess"),
    ("sys_settrace", "import sys\nsys.settrace(f)", B, "sys_settrace"),
    ("sys_setprofile", "import sys\nsys.setprofile(f)", B, "sys_setprofile"),
    ("sys_addaudithook", "from sys import addaudithook", B, "sys_addaudithook"),
    ("atexit_register", "import atexit\natexit.register(f)", B, "import_atexit"),
    ("weakref_finalize", "import weakref\nweakref.finalize(obj, f)", B, "weakref_finalize"),
    # -- ordinary code stays tier 1
    ("utf8_declaration", "# -*- coding: utf-8 -*-\nx = 'caf\u00e9'\n", I, None),
    ("utf8_spelled_utf8", "# coding=UTF8\nx = 1\n", I, None),
    ("getattr_ordinary", "class P:\n    name = 'x'\ngetattr(P(), 'name')", I, None),
    ("getattr_execute", "getattr(cursor, 'execute')", I, None),
    ("copy_deepcopy", "import copy\ncopy.deepcopy([1, [2]])", I, None),
    ("types_namespace", "import types\ntypes.SimpleNamespace(a=1)", I, None),
    ("eq_method", "class A:\n    def __eq__(self, other):\n        return True", I, None),
    ("threads", "import threading\nthreading.Thread(target=print).start()", I, None),
    ("signal_handler", "import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)", I, None),
    ("os_path", "import os.path\nos.path.join('a', 'b')", I, None),
    ("coding_comment_later", "x = 1\ny = 2\n# decoding: latin-1 is handled below\n", I, None),
]


def test_table_is_big_enough() -> None:
    assert len(ROWS) >= 25
    assert len({row[0] for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize(("source", "tier", "rule"), [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_gate_table(source: str, tier: Tier, rule: str | None) -> None:
    verdict = check_code(source, with_bandit=False)
    assert verdict.tier == tier, verdict.summary()
    if rule is not None:
        assert rule in {f.rule for f in verdict.findings if f.tier == tier}, verdict.summary()


def test_the_utf7_payload_is_real_and_only_the_encoding_rule_sees_it() -> None:
    decoded = codecs.decode(UTF7_PAYLOAD.encode(), "utf-7")
    assert "os.system('id')" in decoded and "os.system" not in UTF7_PAYLOAD
    # Python reads the bytes with the declared codec: its tree calls os.system ...
    calls = [n for n in ast.walk(ast.parse(UTF7_PAYLOAD.encode())) if isinstance(n, ast.Call)]
    assert [ast.unparse(c.func) for c in calls] == ["os.system"]
    # ... while the text the gates read is a comment: only the declaration gives it away
    verdict = check_code(UTF7_PAYLOAD, with_bandit=False)
    assert {f.rule for f in verdict.blocking()} == {"encoding_declaration"}
    assert "utf-7" in verdict.summary()


def test_a_syntax_error_names_the_error_and_its_line() -> None:
    verdict = check_code("x = 1\ny = 2\ndef f(:\n    pass\n", filename="m.py", with_bandit=False)
    (finding,) = verdict.blocking()
    assert (finding.rule, finding.line) == ("unparsable", 3)
    assert finding.message == "does not parse: invalid syntax (line 3)"


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=string.ascii_letters + " \n"),
       codec=st.sampled_from(["latin-1", "utf-7", "utf-16", "cp1252", "ascii", "shift_jis", "rot13", "bogus"]),
       second_line=st.booleans())
def test_any_non_utf8_declaration_is_blocked(text: str, codec: str, second_line: bool) -> None:
    prefix = ("#!/usr/bin/env python\n" if second_line else "") + f"# -*- coding: {codec} -*-\n"
    verdict = check_code(prefix + text, with_bandit=False)
    assert verdict.tier == Tier.BLOCKED
    assert "encoding_declaration" in {f.rule for f in verdict.blocking()}


@settings(max_examples=30, deadline=None)
@given(text=st.text(alphabet=string.ascii_letters + " \n"), spelling=st.sampled_from(["utf-8", "utf8", "UTF-8"]))
def test_a_utf8_declaration_is_never_an_encoding_finding(text: str, spelling: str) -> None:
    verdict = check_code(f"# coding: {spelling}\n" + text, with_bandit=False)
    assert "encoding_declaration" not in {f.rule for f in verdict.findings}


def test_the_agents_own_property_checks_stay_tier_1() -> None:
    source = property_tests({"name": "add", "signature": "add(a: int, b: int) -> int"})  # type: ignore[arg-type]
    verdict = check_code(source, with_bandit=False)
    assert verdict.tier == Tier.AUTO, verdict.summary()


# -- through run_generated: blocked code never reaches the sandbox ----------------------------

def _run(module: str, tmp_path: Path, test: str = "def test_x():\n    pass\n", extra_block: tuple[str, ...] = ()):
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    approvals = Approvals(JsonGrantStore(tmp_path / "grants.json"), tmp_path / "audit.log")
    # never probed: a blocked skill does not run, so no sandbox level is needed
    box = Sandbox(workspace.resolve(), "bwrap")
    return run_generated(name="skill", module_source=module, test_source=test, workspace=workspace,
                         sandbox=box, approvals=approvals, extra_block=extra_block)


def test_run_generated_never_runs_unreadable_code(tmp_path: Path) -> None:
    for module, rule in ((UTF7_PAYLOAD, "encoding_declaration"), ("def f(:\n", "unparsable"),
                         ("x = 1\0", "nul_byte")):
        out = _run(module, tmp_path)
        assert out.blocked and out.run is None and rule in out.reason
    out = _run("x = 1\n", tmp_path, test="def test_x(:\n")
    assert out.blocked and "test_skill.py:1: does not parse" in out.reason


# -- custom rules ([safety] block) -------------------------------------------------------------

@pytest.mark.parametrize(("source", "blocked"), [
    ("import yaml", True),
    ("import yaml.constructor", True),
    ("from yaml import safe_load", True),
    ("import yaml as y\ny.load(s)", True),
    ("import yamlish", False),
    ("import shutil\nshutil.rmtree('d')", True),
    ("from shutil import rmtree", True),
    ("import shutil\ngetattr(shutil, 'rmtree')('d')", True),
    ("import shutil\nshutil.copy('a', 'b')", False),
    ("import requests\nrequests.get('http://x')", True),       # the regex
    ("import requests\nrequests.head('http://x')", False),    # tier 2 (network), not custom
    ("import posix\nposix.getcwd()", True),                    # os.getcwd, through the alias
])
def test_custom_rules(source: str, blocked: bool) -> None:
    rules = ("yaml", "shutil.rmtree", r"re:requests\.(get|post)", "os.getcwd")
    verdict = check_code(source, with_bandit=False, extra_block=rules)
    custom = [f for f in verdict.findings if f.rule == "custom_block"]
    assert bool(custom) == blocked, verdict.summary()
    assert all(f.tier == Tier.BLOCKED for f in custom)
    assert check_code(source, with_bandit=False).tier < Tier.BLOCKED  # only the custom rule blocks


def test_custom_findings_name_the_entry() -> None:
    verdict = check_code("x = 1\nimport requests\nrequests.post(u)\n", with_bandit=False,
                         extra_block=(r"re:requests\.(get|post)",))
    (finding,) = [f for f in verdict.findings if f.rule == "custom_block"]
    assert finding.line == 3 and r"'re:requests\\.(get|post)'" in finding.message


def test_a_custom_module_rule_blocks_a_skill_before_it_runs(tmp_path: Path) -> None:
    out = _run("import yaml\n\ndef load(s):\n    return yaml.safe_load(s)\n", tmp_path, extra_block=("yaml",))
    assert out.blocked and out.run is None
    assert out.reason.startswith("blocked by gate custom_block") and "'yaml'" in out.reason


@pytest.mark.parametrize(("entry", "why"), [
    (3, "an entry is a string"),
    ("re:(", "bad regular expression"),
    ("re:a*", "matches the empty string"),
    ("not a name", "neither a dotted name"),
    ("os..system", "neither a dotted name"),
])
def test_bad_block_entries(entry: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_block_entry(entry)
