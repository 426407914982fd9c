"""The single entry point for running generated code: gates, approvals, sandbox.

``run_generated`` is the only code path that executes a skill, its doctests or its tests.
See safety/README.md for what each layer stops and what it does not.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from safety.approvals import ApprovalRequest, Approvals, Decision, GrantStore, JsonGrantStore
from safety.paths import (
    InvalidSkillName,
    resolve_inside,
    safe_read_text,
    safe_rmtree,
    safe_write_text,
    validate_skill_name,
)
from safety.policy import Finding, Tier, Verdict, check_code
from safety.sandbox import RunResult, Sandbox, SandboxDidNotStart, SandboxUnavailable, available_levels

__all__ = ["ApprovalRequest", "Approvals", "Decision", "Finding", "GrantStore", "InvalidSkillName",
           "JsonGrantStore", "RunResult", "SafetyOutcome", "Sandbox", "SandboxDidNotStart", "SandboxUnavailable",
           "TestRun", "Tier", "Verdict", "available_levels", "check_code", "resolve_inside",
           "run_generated", "safe_read_text", "safe_write_text", "validate_skill_name"]

CONFTEST = '''"""Written by safety.run_generated: earlier skills (read-only) are importable,
as ``from skills.<name> import <fn>`` (and, for skills saved before that, ``from <name> import <fn>``)."""
import sys
import types
SKILLS_DIR = {skills!r}
if SKILLS_DIR:
    _package = types.ModuleType("skills", "The workspace's saved skills (read-only here).")
    _package.__path__ = [SKILLS_DIR]  # only the skills directory is read: no listing of its parent
    sys.modules["skills"] = _package
    if SKILLS_DIR not in sys.path:
        sys.path.append(SKILLS_DIR)

import ast as _ast
import doctest as _doctest

_check_output = _doctest.OutputChecker.check_output
_get_doctest = _doctest.DocTestParser.get_doctest


def _literal(text):
    try:
        return True, _ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def check_output(self, want, got, optionflags):
    """A docstring's example compared as Python values ("21" is '21'), and one written as an
    assertion with nothing after it (``>>> f(x) == y``) passes when it is True."""
    if _check_output(self, want, got, optionflags):
        return True
    if not want.strip():
        return got.strip() == "True"
    (ok_want, value_want), (ok_got, value_got) = _literal(want), _literal(got)
    return ok_want and ok_got and type(value_want) is type(value_got) and value_want == value_got


def get_doctest(self, string, globs, name, filename, lineno):
    """A docstring doctest cannot parse (a literal newline inside an example) has no examples,
    instead of failing the whole run."""
    try:
        return _get_doctest(self, string, globs, name, filename, lineno)
    except ValueError:
        return _get_doctest(self, "", globs, name, filename, lineno)


_doctest.OutputChecker.check_output = check_output
_doctest.DocTestParser.get_doctest = get_doctest
'''
# Plugins installed beside pytest that a skill's run never needs; langsmith's alone costs ~1 s a run.
NO_PLUGINS = ("-p", "no:langsmith_plugin", "-p", "no:anyio", "-p", "no:typeguard")
PYTEST_ARGS = ("-q", "-p", "no:cacheprovider", *NO_PLUGINS, "--doctest-modules")
COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
TEST_FILE = re.compile(r"test_[a-z0-9_]{1,100}\.py")
SUMMARY = re.compile(r"^=*\s*(?:\d+ \w+|no tests ran).* in [\d.]+s", re.M)


@dataclass(frozen=True)
class TestRun:
    __test__ = False  # not a pytest class
    level: str
    passed: int
    failed: int
    errors: int
    returncode: int | None
    timed_out: bool
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.errors == 0 and self.passed > 0


@dataclass(frozen=True)
class SafetyOutcome:
    verdict: Verdict
    blocked: bool                 # True: the code never ran
    reason: str | None            # one line for the user
    granted: frozenset[str]
    run: TestRun | None           # None when blocked


def parse_pytest(result: RunResult) -> TestRun:
    """Counts from pytest's last summary line; anything unparsable counts as an error."""
    output = result.stdout + ("\n" + result.stderr if result.stderr else "")
    lines = SUMMARY.findall(result.stdout)
    counts = {"passed": 0, "failed": 0, "errors": 0}
    if lines:
        for n, kind in COUNT.findall(lines[-1]):
            key = "errors" if kind.startswith("error") else kind
            if key in counts:
                counts[key] += int(n)
    if result.returncode not in (0, 1) and counts["errors"] == 0:
        counts["errors"] = 1  # crash, timeout, collection failure, no tests, killed
    if result.timed_out:
        output += "\n[sandbox] timed out: the whole process tree was killed"
    if result.truncated:
        output += "\n[sandbox] output truncated"
    return TestRun(result.level, counts["passed"], counts["failed"], counts["errors"],
                   result.returncode, result.timed_out, output, result.seconds)


def gate(name: str, module_source: str, test_source: str, extra_block: Sequence[str] = (), *,
         extra_tests: Mapping[str, str] | None = None, dependencies: Mapping[str, str] | None = None) -> Verdict:
    """The gates over every file a skill run executes (``extra_block``: the user's own rules): the
    module, its tests, and the saved skills it imports, whose needs become this run's needs."""
    verdict = (check_code(module_source, filename=f"{name}.py", extra_block=extra_block)
               + check_code(test_source, filename=f"test_{name}.py", extra_block=extra_block))
    for filename, source in (extra_tests or {}).items():
        verdict = verdict + check_code(source, filename=filename, extra_block=extra_block)
    for dep, source in sorted((dependencies or {}).items()):
        verdict = verdict + check_code(source, filename=f"skills/{dep}.py", extra_block=extra_block)
    return verdict


def run_generated(*, name: str, module_source: str, test_source: str, workspace: Path,
                  sandbox: Sandbox, approvals: Approvals, timeout: float = 15.0,
                  skills_dir: Path | None = None, extra_block: Sequence[str] = (),
                  extra_tests: Mapping[str, str] | None = None,
                  dependencies: Mapping[str, str] | None = None) -> SafetyOutcome:
    """Gate, approve, then run the module's doctests and its tests in the sandbox. Code the
    gates cannot read (a syntax error, a non-UTF-8 encoding) never runs; ``extra_block`` holds
    the user's custom rules ([safety] block), checked as tier 3. ``extra_tests`` are more test
    files (``test_*.py`` name -> source) run beside ``test_source``; ``dependencies`` are the
    sources of the saved skills the code imports (name -> source): gated with it, so what they
    need is asked for this run, and read from ``skills_dir`` (read-only) when it runs."""
    validate_skill_name(name)
    extra_tests = dict(extra_tests or {})
    for filename in extra_tests:
        if not TEST_FILE.fullmatch(filename) or filename == f"test_{name}.py":
            raise ValueError(f"not an extra test file name: {filename!r}")
    verdict = gate(name, module_source, test_source, extra_block, extra_tests=extra_tests,
                   dependencies=dependencies)
    if verdict.tier == Tier.BLOCKED:
        first = verdict.blocking()[0]
        return SafetyOutcome(verdict, True, f"blocked by gate {first.rule} "
                             f"({first.filename}:{first.line}: {first.message})", frozenset(), None)
    granted: frozenset[str] = frozenset()
    if verdict.needs:
        granted, denied = approvals.resolve(name, verdict.needs,
                                            allow_auto=sandbox.level != "rlimits")
        if denied:
            asked = ", ".join(str(ApprovalRequest(name, n)) for n in sorted(denied))
            return SafetyOutcome(verdict, True, f"not approved: {asked}", granted, None)
    try:
        run = _run_in_exec_dir(name, module_source, {f"test_{name}.py": test_source, **extra_tests},
                               Path(workspace), sandbox, timeout, skills_dir, granted)
    except SandboxUnavailable as err:
        return SafetyOutcome(verdict, True, str(err), granted, None)
    return SafetyOutcome(verdict, False, None, granted, run)


def _run_in_exec_dir(name: str, module_source: str, tests: dict[str, str], workspace: Path,
                     sandbox: Sandbox, timeout: float, skills_dir: Path | None,
                     granted: frozenset[str]) -> TestRun:
    skills = str(Path(skills_dir).resolve()) if skills_dir else ""
    readonly = [Path(skills)] if skills else []
    warm = sandbox.run_warm({f"{name}.py": module_source, **tests, "conftest.py": CONFTEST.format(skills=skills)},
                            [*PYTEST_ARGS, "--rootdir", "{run_dir}", f"{name}.py", *tests],
                            timeout=timeout, grants=granted, readonly=readonly)
    if warm is not None:
        return parse_pytest(warm)
    rel = f"exec/{name}-{secrets.token_hex(4)}"
    exec_dir = resolve_inside(workspace, rel)
    try:
        safe_write_text(workspace, f"{rel}/{name}.py", module_source)
        for filename, source in tests.items():
            safe_write_text(workspace, f"{rel}/{filename}", source)
        safe_write_text(workspace, f"{rel}/conftest.py", CONFTEST.format(skills=skills))
        exec_dir.chmod(0o700)
        result = sandbox.run_python(
            ["-m", "pytest", *PYTEST_ARGS, "--rootdir", str(exec_dir), f"{name}.py", *tests],
            cwd=exec_dir, timeout=timeout, grants=granted, readonly=readonly)
    finally:
        note = safe_rmtree(exec_dir)
    run = parse_pytest(result)
    if note:
        run = dataclasses.replace(run, output=f"{run.output}\n[sandbox] {note}")
    return run
