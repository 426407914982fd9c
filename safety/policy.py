"""Static gates: regex patterns and AST rules over generated source, in three tiers.

The gates are triage, not the boundary: they catch the obvious, name what a skill asks for
(network, a shell, files outside the workspace, an install) so the user can be asked, and
refuse the plainly hostile. Obfuscated code gets past them; the runtime sandbox is what
contains it. The rules are data (``REGEX_RULES``, ``IMPORT_RULES``, ``CALL_RULES``...).

The gates read the text Python will run: a source that does not parse, holds a NUL byte or
declares a source encoding other than UTF-8 (PEP 263, e.g. ``# coding: utf-7``, under which
Python would decode something else than what the gates read) is blocked outright.
"""

from __future__ import annotations

import ast
import codecs
import enum
import functools
import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class Tier(enum.IntEnum):
    AUTO = 1        # shown, runs without asking
    APPROVAL = 2    # runs only if the user grants ``need``
    BLOCKED = 3     # never runs, whatever flag is given


@dataclass(frozen=True)
class Finding:
    rule: str
    tier: Tier
    message: str
    line: int
    need: str | None = None      # tier-2 need: "network" | "shell" | "files_outside" | "install"
    source: str = "gate"         # "gate" | "bandit"
    filename: str = ""


@dataclass(frozen=True)
class Verdict:
    findings: tuple[Finding, ...] = ()

    @property
    def tier(self) -> Tier:
        """Highest gate tier; bandit findings are shown but never change it."""
        return max((f.tier for f in self.findings if f.source == "gate"), default=Tier.AUTO)

    @property
    def needs(self) -> frozenset[str]:
        return frozenset(f.need for f in self.findings
                         if f.source == "gate" and f.tier == Tier.APPROVAL and f.need)

    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.source == "gate" and f.tier == Tier.BLOCKED)

    def summary(self) -> str:
        """One line per finding, worst first, for the user."""
        if not self.findings:
            return "no findings"
        rows = sorted(self.findings, key=lambda f: (f.source != "gate", -f.tier, f.filename, f.line))
        return "\n".join(
            f"[{f.source}:{f.tier.name.lower()}] {f.filename or '<skill>'}:{f.line} {f.rule}: "
            f"{f.message}" + (f" (needs {f.need})" if f.need else "")
            for f in rows)

    def __add__(self, other: Verdict) -> Verdict:
        return Verdict(self.findings + other.findings)


B, A, I = Tier.BLOCKED, Tier.APPROVAL, Tier.AUTO  # noqa: E741 - short tier names keep the rule table readable

# The seed's patterns, on raw text (so they also see strings and comments). (?<![\w.]) keeps
# re.compile( and ast.literal_eval( out.
REGEX_RULES: tuple[tuple[str, str, Tier, str | None, str], ...] = (
    ("regex_eval", r"(?<![\w.])eval\s*\(", B, None, "eval( runs arbitrary code"),
    ("regex_exec", r"(?<![\w.])exec\s*\(", B, None, "exec( runs arbitrary code"),
    ("regex_compile", r"(?<![\w.])compile\s*\(", B, None, "compile( builds code objects"),
    ("regex_import", r"__import__\s*\(", B, None, "__import__( imports by computed name"),
    ("regex_os_system", r"\bos\.system\s*\(", B, None, "os.system( runs a shell"),
    ("regex_popen", r"\bsubprocess\.Popen\s*\(", A, "shell", "subprocess.Popen( starts a process"),
    ("regex_open_write_outside",
     r"\bopen\s*\(\s*[rbf]*['\"](?:/|~|\.\./)[^'\"]*['\"]\s*,\s*[rbf]*['\"][^'\"]*[wax+]",
     A, "files_outside", "open( writes a path outside the workspace"),
)

# module (or prefix) -> (tier, need, why). Matched on `import x.y` and `from x import y`.
IMPORT_RULES: dict[str, tuple[Tier, str | None, str]] = {
    "ctypes": (B, None, "foreign memory access"), "_ctypes": (B, None, "foreign memory access"),
    "cffi": (B, None, "foreign memory access"), "importlib": (B, None, "imports by computed name"),
    "imp": (B, None, "imports by computed name"), "runpy": (B, None, "runs modules by name"),
    "marshal": (B, None, "loads code objects"), "pickle": (B, None, "unpickling runs code"),
    "_pickle": (B, None, "unpickling runs code"), "shelve": (B, None, "unpickling runs code"),
    "dill": (B, None, "unpickling runs code"), "cloudpickle": (B, None, "unpickling runs code"),
    "copyreg": (B, None, "registers reducers that run code"),
    "builtins": (B, None, "rebinds builtins"), "gc": (B, None, "reaches every live object"),
    "pty": (B, None, "spawns a terminal"), "code": (B, None, "interactive interpreter"),
    "codeop": (B, None, "compiles code"), "timeit": (B, None, "runs code from strings"),
    "cProfile": (B, None, "runs code from strings"), "profile": (B, None, "runs code from strings"),
    "trace": (B, None, "runs code from strings"), "doctest": (B, None, "runs docstring text as code"),
    "pdb": (B, None, "a debugger runs code from strings"), "bdb": (B, None, "a debugger traces every frame"),
    "atexit": (B, None, "runs code after the tests, like __del__"),
    "site": (B, None, "runs .pth files"), "zipimport": (B, None, "imports from archives by path"),
    "pkgutil": (B, None, "resolves objects by computed name"),
    "pydoc": (B, None, "locates objects by computed name"),
    "_posixsubprocess": (B, None, "spawns processes beneath subprocess"),
    "socket": (A, "network", "opens sockets"), "_socket": (A, "network", "opens sockets"),
    "ssl": (A, "network", "network I/O"), "_ssl": (A, "network", "network I/O"),
    "http": (A, "network", "HTTP"), "urllib": (A, "network", "HTTP"),
    "requests": (A, "network", "HTTP"), "httpx": (A, "network", "HTTP"),
    "aiohttp": (A, "network", "HTTP"), "ftplib": (A, "network", "FTP"),
    "smtplib": (A, "network", "mail"), "telnetlib": (A, "network", "telnet"),
    "socketserver": (A, "network", "servers"), "xmlrpc": (A, "network", "RPC"),
    "websocket": (A, "network", "websockets"), "websockets": (A, "network", "websockets"),
    "subprocess": (A, "shell", "starts processes"), "multiprocessing": (A, "shell", "starts processes"),
    "_multiprocessing": (A, "shell", "starts processes"), "webbrowser": (A, "shell", "starts a browser"),
    "pip": (A, "install", "installs packages"), "ensurepip": (A, "install", "installs packages"),
}

# Modules that are another name for one the rules list (`posix.system` is `os.system`).
MODULE_ALIASES = {"posix": "os", "nt": "os", "_os": "os", "_signal": "signal"}

# dotted call or attribute -> (tier, need, why); names go through MODULE_ALIASES first
CALL_RULES: dict[str, tuple[Tier, str | None, str]] = {
    "pytest.importorskip": (B, None, "imports a module named in a string"),
    "os.system": (B, None, "runs a shell"), "os.popen": (B, None, "runs a shell"),
    "os.fork": (B, None, "forks"), "os.forkpty": (B, None, "forks"),
    "os.kill": (B, None, "signals other processes"), "os.killpg": (B, None, "signals groups"),
    "os.setsid": (B, None, "leaves the process group"), "os.setpgid": (B, None, "leaves the group"),
    "os.unshare": (B, None, "new namespaces"), "os.setns": (B, None, "joins namespaces"),
    "os.chroot": (B, None, "changes root"), "os.symlink": (A, "files_outside", "plants a link"),
    "os.posix_spawn": (B, None, "spawns"), "os.posix_spawnp": (B, None, "spawns"),
    "os.register_at_fork": (B, None, "runs code at every fork"), "os.startfile": (B, None, "runs a program"),
    "os.environ": (I, None, "reads the environment (the sandbox clears it)"),
    "os.getenv": (I, None, "reads the environment (the sandbox clears it)"),
    "sys.modules": (B, None, "reaches loaded modules"), "signal.pthread_kill": (B, None, "signals"),
    "signal.pidfd_send_signal": (B, None, "signals other processes"),
    "sys.settrace": (B, None, "runs a hook on every call"), "sys.setprofile": (B, None, "runs a hook on every call"),
    "sys.addaudithook": (B, None, "hooks every audited event"), "sys.call_tracing": (B, None, "traces calls"),
    "sys.monitoring": (B, None, "runs hooks on every event"), "sys.meta_path": (B, None, "import hooks run code"),
    "sys.path_hooks": (B, None, "import hooks run code"),
    "threading.settrace": (B, None, "runs a hook on every call"),
    "threading.setprofile": (B, None, "runs a hook on every call"),
    "threading.settrace_all_threads": (B, None, "runs a hook on every call"),
    "threading.setprofile_all_threads": (B, None, "runs a hook on every call"),
    "atexit.register": (B, None, "runs code after the tests, like __del__"),
    "weakref.finalize": (B, None, "runs code after the tests, like __del__"),
    "types.FunctionType": (B, None, "builds a function from a code object"),
    "types.LambdaType": (B, None, "builds a function from a code object"),
    "types.CodeType": (B, None, "builds code objects"),
    "asyncio.create_subprocess_exec": (A, "shell", "starts a process"),
    "asyncio.subprocess.create_subprocess_exec": (A, "shell", "starts a process"),
    "asyncio.create_subprocess_shell": (B, None, "runs a shell"),
    "asyncio.subprocess.create_subprocess_shell": (B, None, "runs a shell"),
    "concurrent.futures.ProcessPoolExecutor": (A, "shell", "starts processes"),
    "shutil.rmtree": (I, None, "deletes a tree (only the workspace is writable)"),
}
CALL_PREFIX_RULES: tuple[tuple[str, Tier, str | None, str], ...] = (
    ("os.exec", B, None, "replaces the process"), ("os.spawn", B, None, "spawns"),
)
# Attribute names taken by name (`getattr(x, 'system')`, `operator.attrgetter('system')`) from an
# object the gates cannot name: blocked, since the object may well be `os`.
DANGEROUS_ATTRS = re.compile(r"^(?:(?:exec|spawn)[lv]p?e?|" + "|".join(
    sorted(name.split(".")[1] for name, (tier, _, _) in CALL_RULES.items()
           if tier == B and name.split(".")[0] in ("os", "sys"))) + ")$")
NAME_TAKERS = {"getattr", "setattr", "delattr", "hasattr", "operator.attrgetter", "operator.methodcaller"}
BLOCKED_BUILTINS = {"eval", "exec", "compile", "__import__", "globals", "locals", "vars",
                    "breakpoint", "memoryview"}
DYNAMIC_ATTR_BUILTINS = {"getattr", "setattr", "delattr", "hasattr"}
ALLOWED_DUNDERS = {"__init__", "__name__", "__doc__", "__qualname__", "__module__", "__file__",
                   "__main__", "__all__", "__version__", "__future__", "__post_init__",
                   "__enter__", "__exit__", "__repr__", "__str__", "__eq__", "__hash__",
                   "__len__", "__iter__", "__next__", "__lt__", "__annotations__"}
BLOCKED_METHODS = {"__del__": "a finalizer runs at interpreter exit, after the tests",
                   "__getattribute__": "intercepts every attribute access",
                   "__init_subclass__": "runs on subclassing", "__set_name__": "runs on class creation",
                   "__reduce__": "copy and pickle call it to rebuild the object: it runs code",
                   "__reduce_ex__": "copy and pickle call it to rebuild the object: it runs code",
                   "__setstate__": "copy and pickle call it to restore the object: it runs code",
                   "__getstate__": "copy and pickle call it to save the object: it runs code"}
SENSITIVE_PREFIXES = ("/proc", "/sys", "/dev", "/etc", "/root", "/home", "/boot", "/var/run",
                      "/run", "~")
DUNDER = re.compile(r"^__\w+__$")
# PEP 263: a comment in the first two lines declaring the source encoding.
CODING = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")
UTF8_NAMES = {"utf-8", "utf-8-sig"}  # the tokenizer reads both as UTF-8
UNPARSABLE = "unparsable"
# A [safety] block entry: a dotted name, or "re:" and a regular expression over the raw source.
DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


def canonical(dotted: str) -> str:
    """`posix.system` -> "os.system": a module's other names resolve to the one the rules list."""
    head, dot, rest = dotted.partition(".")
    return MODULE_ALIASES.get(head, head) + dot + rest


def check_block_entry(entry: object) -> str:
    """A custom block entry as given, or ValueError saying in one line why it is not one."""
    if not isinstance(entry, str):
        raise ValueError("an entry is a string")
    if entry.startswith("re:"):
        try:
            pattern = re.compile(entry[3:])
        except re.error as err:
            raise ValueError(f"bad regular expression: {err}") from None
        if pattern.search(""):
            raise ValueError("the regular expression matches the empty string (it would block everything)")
        return entry
    if not DOTTED_NAME.match(entry):
        raise ValueError("neither a dotted name (e.g. shutil.rmtree) nor re:<regular expression>")
    return entry


def _attr_name(node: ast.AST) -> str | None:
    """`getattr(x, 'name')` -> "name" (a constant name only)."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in DYNAMIC_ATTR_BUILTINS
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)):
        return node.args[1].value
    return None


def _dotted(node: ast.AST) -> str | None:
    """`os.path.join` (or `getattr(os.path, 'join')`) -> "os.path.join"; None for anything else."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif (name := _attr_name(node)) is not None:
            assert isinstance(node, ast.Call)
            parts.append(name)
            node = node.args[0]
        else:
            break
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _Visitor(ast.NodeVisitor):
    """Walks the tree once and records findings from the rule tables (and the custom names)."""

    def __init__(self, filename: str, custom: tuple[str, ...] = ()) -> None:
        self.filename = filename
        self.custom = tuple(canonical(name) for name in custom)
        self.found: list[Finding] = []
        self.aliases: dict[str, str] = {}   # local name -> module ("sp" -> "subprocess")

    def add(self, rule: str, tier: Tier, msg: str, node: ast.AST, need: str | None = None) -> None:
        self.found.append(Finding(rule, tier, msg, getattr(node, "lineno", 0), need, "gate",
                                  self.filename))

    def _custom(self, name: str, node: ast.AST) -> None:
        for entry in self.custom:
            if name == entry or name.startswith(entry + "."):
                self.add("custom_block", B, f"{name}: matches the custom rule {entry!r}", node)

    def _module(self, name: str, node: ast.AST) -> None:
        name = canonical(name)
        self._custom(name, node)
        for key in (name, name.split(".")[0]):
            if key in IMPORT_RULES:
                tier, need, why = IMPORT_RULES[key]
                self.add(f"import_{key}", tier, f"imports {name}: {why}", node, need)
                return

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(alias.name, node)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:  # `import os.path` binds `os`, to the module os
                head = alias.name.split(".")[0]
                self.aliases[head] = head
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level:
            self.add("relative_import", A, "relative import reaches outside the skill", node,
                     "files_outside")
        self._module(mod, node)
        for alias in node.names:
            if alias.name == "*":
                self._star_import(mod, node)
                continue
            self.aliases[alias.asname or alias.name] = f"{mod}.{alias.name}"
            self._dotted_rule(f"{mod}.{alias.name}", node)
        self.generic_visit(node)

    def _star_import(self, mod: str, node: ast.AST) -> None:
        mod = canonical(mod)
        ruled = [name for name, (tier, _, _) in CALL_RULES.items() if tier > I] + list(self.custom) + [
            prefix for prefix, *_ in CALL_PREFIX_RULES]
        if any(name.startswith(mod + ".") for name in ruled):
            self.add("star_import", B, f"from {mod} import *: hides which of its names are used", node)

    def _resolve(self, dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        real = self.aliases.get(head, head)
        return f"{real}.{rest}" if rest else real

    def _dotted_rule(self, name: str, node: ast.AST) -> None:
        name = canonical(name)
        self._custom(name, node)
        if name in CALL_RULES:
            tier, need, why = CALL_RULES[name]
            self.add(name.replace(".", "_"), tier, f"{name}: {why}", node, need)
            return
        for prefix, tier, need, why in CALL_PREFIX_RULES:
            if name.startswith(prefix):
                self.add(prefix.replace(".", "_"), tier, f"{name}: {why}", node, need)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if DUNDER.match(node.attr) and node.attr not in ALLOWED_DUNDERS:
            self.add("dunder_attribute", B, f"dunder attribute .{node.attr}", node)
        elif node.attr.startswith("_getframe") or node.attr in {"f_globals", "f_back", "gi_frame",
                                                                "tb_frame", "f_builtins"}:
            self.add("frame_access", B, f"frame introspection .{node.attr}", node)
        dotted = _dotted(node)
        if dotted:
            self._dotted_rule(self._resolve(dotted), node)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if DUNDER.match(node.id) and node.id not in ALLOWED_DUNDERS:
            self.add("dunder_name", B, f"dunder name {node.id}", node)
        elif node.id in self.aliases and self.aliases[node.id] != node.id:
            self._dotted_rule(self.aliases[node.id], node)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        """`m = os` makes `m.system` read as `os.system` (a name bound to an imported one)."""
        dotted = _dotted(node.value)
        if dotted and dotted.split(".")[0] in self.aliases:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.aliases[target.id] = self._resolve(dotted)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if node.name in BLOCKED_METHODS:
            self.add("blocked_method", B, f"def {node.name}: {BLOCKED_METHODS[node.name]}", node)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id in BLOCKED_BUILTINS:
                self.add(f"builtin_{func.id}", B, f"{func.id}() runs or exposes code", node)
            if func.id in DYNAMIC_ATTR_BUILTINS and len(node.args) >= 2 and not (
                    isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
                self.add("dynamic_attribute", B, f"{func.id}() with a computed name", node)
            if func.id == "open":
                self._open_call(node)
        self._name_taker(node)
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and not kw.value.value):
                self.add("shell_true", B, "shell=True runs a shell", node)
        self.generic_visit(node)

    def _name_taker(self, node: ast.Call) -> None:
        """`getattr(os, 'system')` is `os.system`; `attrgetter('system')` on an unknown object is
        blocked when the name is one the rules block on `os` or `sys`."""
        func = _dotted(node.func)
        func = func and self._resolve(func)
        if func not in NAME_TAKERS:
            return
        dynamic = func in DYNAMIC_ATTR_BUILTINS
        name_arg = node.args[1] if dynamic and len(node.args) >= 2 else node.args[0] if node.args else None
        if not (isinstance(name_arg, ast.Constant) and isinstance(name_arg.value, str)):
            return
        target = _dotted(node.args[0]) if dynamic else None
        if target is not None:
            self._dotted_rule(self._resolve(f"{target}.{name_arg.value}"), node)
        elif DANGEROUS_ATTRS.match(name_arg.value.rpartition(".")[2]):
            self.add("dangerous_attribute_name", B,
                     f"{func}() takes {name_arg.value!r}, a name blocked on os/sys, from an object the gates "
                     "cannot name", node)

    def _open_call(self, node: ast.Call) -> None:
        mode = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and (
                set(mode.value) & set("wax+")):
            target = node.args[0] if node.args else None
            if isinstance(target, ast.Constant) and isinstance(target.value, str) and (
                    target.value.startswith(("/", "~")) or ".." in target.value):
                self.add("open_write_outside", A, f"writes {target.value!r}", node, "files_outside")

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, str) and value.strip():
            s = value.strip()
            if DUNDER.match(s) and s not in ALLOWED_DUNDERS:
                self.add("dunder_string", B, f"string names dunder {s}", node)
            elif s.startswith(SENSITIVE_PREFIXES) and "\n" not in s and " " not in s:
                self.add("sensitive_path", B, f"sensitive path {s!r}", node)
            elif s.startswith("/") and len(s) > 1 and "\n" not in s and " " not in s:
                self.add("absolute_path", A, f"absolute path {s!r}", node, "files_outside")
            elif re.search(r"(^|/)\.\.(/|$)", s) and " " not in s:
                self.add("parent_path", A, f"path {s!r} climbs out with ..", node, "files_outside")
            elif re.search(r"\bpip\s+install\b", s):
                self.add("pip_install", A, "runs pip install", node, "install")


def _line_of(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def _regex_findings(source: str, filename: str, custom: tuple[str, ...] = ()) -> list[Finding]:
    out = []
    for rule, pattern, tier, need, why in REGEX_RULES:
        for m in re.finditer(pattern, source):
            out.append(Finding(rule, tier, why, _line_of(source, m.start()), need, "gate", filename))
    for entry in custom:
        for m in re.finditer(entry[3:], source):
            out.append(Finding("custom_block", B, f"matches the custom rule {entry!r}",
                               _line_of(source, m.start()), None, "gate", filename))
    return out


def _codec(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def _encoding_findings(source: str, filename: str) -> list[Finding]:
    """A PEP 263 declaration of anything but UTF-8 in the first two lines (split both the way the
    tokenizer splits, on \\r and \\n, and the way str.splitlines does)."""
    text = source.removeprefix("\ufeff")
    out = []
    for lines in (re.split(r"\r\n|\r|\n", text, maxsplit=2)[:2], text.splitlines()[:2]):
        for number, line in enumerate(lines, 1):
            match = CODING.match(line)
            if match is None:
                continue
            declared, codec = match.group(1), _codec(match.group(1))
            if codec not in UTF8_NAMES:
                what = f"unknown source encoding {declared!r}" if codec is None else \
                    f"source encoding {declared!r}"
                out.append(Finding("encoding_declaration", B, f"declares {what}: Python would decode "
                                   "other text than the gates read", number, None, "gate", filename))
    return out


def _parse(source: str, filename: str) -> tuple[ast.Module | None, list[Finding]]:
    """The tree, or the findings saying why there is none (the gates cannot vouch for it)."""
    if "\0" in source:
        return None, [Finding("nul_byte", B, "contains a NUL byte", _line_of(source, source.index("\0")),
                              None, "gate", filename)]
    try:
        source.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate: the file could not even be written
        return None, [Finding(UNPARSABLE, B, "does not parse: not encodable as UTF-8 (a lone surrogate)",
                              _line_of(source, err.start), None, "gate", filename)]
    try:
        return ast.parse(source, filename=filename), []
    except SyntaxError as err:
        line = err.lineno or 0
        why = f"does not parse: {err.msg} (line {line})"
    except (ValueError, RecursionError, MemoryError) as err:
        line, why = 0, f"does not parse: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None, [Finding(UNPARSABLE, B, why, line, None, "gate", filename)]


def bandit_findings(source: str, filename: str = "<skill>") -> list[Finding]:
    """Bandit's medium-and-up findings, as shown-only findings (source="bandit")."""
    try:
        with warnings.catch_warnings():  # bandit's plugin loader warns on import
            warnings.simplefilter("ignore")
            from bandit.core import config as b_config
            from bandit.core import manager as b_manager
    except ImportError:  # pragma: no cover - bandit is a declared dependency
        return []
    with tempfile.TemporaryDirectory(prefix="bandit-") as tmp:
        path = Path(tmp) / "skill.py"
        path.write_text(source, encoding="utf-8")
        with warnings.catch_warnings():  # bandit's own deprecation noise
            warnings.simplefilter("ignore")
            mgr = b_manager.BanditManager(b_config.BanditConfig(), "file", quiet=True)
            mgr.discover_files([str(path)])
            mgr.run_tests()
        issues = mgr.get_issue_list(sev_level="MEDIUM", conf_level="LOW")
    tiers = {"MEDIUM": Tier.APPROVAL, "HIGH": Tier.BLOCKED}
    return [Finding(f"bandit_{i.test_id}", tiers.get(i.severity, Tier.AUTO),
                    f"{i.test}: {i.text}", i.lineno, None, "bandit", filename) for i in issues]


def check_code(source: str, *, filename: str = "<skill>", with_bandit: bool = True,
               extra_block: Sequence[str] = ()) -> Verdict:
    """Run every gate over ``source``. What the gates cannot read as Python will read it (a
    non-UTF-8 encoding declaration, a NUL byte, a syntax error) is blocked. ``extra_block``
    holds the user's own rules (see ``check_block_entry``): tier 3, rule ``custom_block``.
    A verdict depends on nothing else, so the last ones are kept: a directive's tests, the same
    at every iteration, are read once."""
    return _check_code(source, filename, with_bandit, tuple(extra_block))


@functools.lru_cache(maxsize=256)
def _check_code(source: str, filename: str, with_bandit: bool, extra_block: tuple[str, ...]) -> Verdict:
    patterns = tuple(e for e in extra_block if e.startswith("re:"))
    names = tuple(e for e in extra_block if not e.startswith("re:"))
    found = _regex_findings(source, filename, patterns) + _encoding_findings(source, filename)
    tree, unreadable = _parse(source, filename)
    found.extend(unreadable)
    if tree is not None:
        visitor = _Visitor(filename, names)
        try:
            visitor.visit(tree)
        except RecursionError:
            found.append(Finding(UNPARSABLE, B, "nested too deeply for the gates to read", 0, None, "gate",
                                 filename))
        found.extend(visitor.found)
        if with_bandit and not any(f.rule == "encoding_declaration" for f in found):
            found.extend(bandit_findings(source, filename))
    unique = dict.fromkeys(found)  # same rule, same line, reported once
    return Verdict(tuple(unique))
