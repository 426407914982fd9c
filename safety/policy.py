"""Static gates: regex patterns and AST rules over generated source, in three tiers.

The gates are triage, not the boundary: they catch the obvious, name what a skill asks for
(network, a shell, files outside the workspace, an install) so the user can be asked, and
refuse the plainly hostile. Obfuscated code gets past them; the runtime sandbox is what
contains it. The rules are data (``REGEX_RULES``, ``IMPORT_RULES``, ``CALL_RULES``...).
"""

from __future__ import annotations

import ast
import enum
import re
import tempfile
import warnings
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
    "builtins": (B, None, "rebinds builtins"), "gc": (B, None, "reaches every live object"),
    "pty": (B, None, "spawns a terminal"), "code": (B, None, "interactive interpreter"),
    "socket": (A, "network", "opens sockets"), "ssl": (A, "network", "network I/O"),
    "http": (A, "network", "HTTP"), "urllib": (A, "network", "HTTP"),
    "requests": (A, "network", "HTTP"), "httpx": (A, "network", "HTTP"),
    "aiohttp": (A, "network", "HTTP"), "ftplib": (A, "network", "FTP"),
    "smtplib": (A, "network", "mail"), "telnetlib": (A, "network", "telnet"),
    "socketserver": (A, "network", "servers"), "xmlrpc": (A, "network", "RPC"),
    "websocket": (A, "network", "websockets"), "websockets": (A, "network", "websockets"),
    "subprocess": (A, "shell", "starts processes"), "pip": (A, "install", "installs packages"),
    "ensurepip": (A, "install", "installs packages"),
}

# dotted call or attribute -> (tier, need, why)
CALL_RULES: dict[str, tuple[Tier, str | None, str]] = {
    "os.system": (B, None, "runs a shell"), "os.popen": (B, None, "runs a shell"),
    "os.fork": (B, None, "forks"), "os.forkpty": (B, None, "forks"),
    "os.kill": (B, None, "signals other processes"), "os.killpg": (B, None, "signals groups"),
    "os.setsid": (B, None, "leaves the process group"), "os.setpgid": (B, None, "leaves the group"),
    "os.unshare": (B, None, "new namespaces"), "os.setns": (B, None, "joins namespaces"),
    "os.chroot": (B, None, "changes root"), "os.symlink": (A, "files_outside", "plants a link"),
    "os.posix_spawn": (B, None, "spawns"), "os.posix_spawnp": (B, None, "spawns"),
    "os.environ": (I, None, "reads the environment (the sandbox clears it)"),
    "os.getenv": (I, None, "reads the environment (the sandbox clears it)"),
    "sys.modules": (B, None, "reaches loaded modules"), "signal.pthread_kill": (B, None, "signals"),
    "shutil.rmtree": (I, None, "deletes a tree (only the workspace is writable)"),
}
CALL_PREFIX_RULES: tuple[tuple[str, Tier, str | None, str], ...] = (
    ("os.exec", B, None, "replaces the process"), ("os.spawn", B, None, "spawns"),
)
BLOCKED_BUILTINS = {"eval", "exec", "compile", "__import__", "globals", "locals", "vars",
                    "breakpoint", "memoryview"}
DYNAMIC_ATTR_BUILTINS = {"getattr", "setattr", "delattr", "hasattr"}
ALLOWED_DUNDERS = {"__init__", "__name__", "__doc__", "__qualname__", "__module__", "__file__",
                   "__main__", "__all__", "__version__", "__future__", "__post_init__",
                   "__enter__", "__exit__", "__repr__", "__str__", "__eq__", "__hash__",
                   "__len__", "__iter__", "__next__", "__lt__", "__annotations__"}
BLOCKED_METHODS = {"__del__": "a finalizer runs at interpreter exit, after the tests",
                   "__getattribute__": "intercepts every attribute access",
                   "__init_subclass__": "runs on subclassing", "__set_name__": "runs on class creation"}
SENSITIVE_PREFIXES = ("/proc", "/sys", "/dev", "/etc", "/root", "/home", "/boot", "/var/run",
                      "/run", "~")
DUNDER = re.compile(r"^__\w+__$")


def _dotted(node: ast.AST) -> str | None:
    """`os.path.join` -> "os.path.join"; None for anything not a plain dotted name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _Visitor(ast.NodeVisitor):
    """Walks the tree once and records findings from the rule tables."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.found: list[Finding] = []
        self.aliases: dict[str, str] = {}   # local name -> module ("sp" -> "subprocess")

    def add(self, rule: str, tier: Tier, msg: str, node: ast.AST, need: str | None = None) -> None:
        self.found.append(Finding(rule, tier, msg, getattr(node, "lineno", 0), need, "gate",
                                  self.filename))

    def _module(self, name: str, node: ast.AST) -> None:
        for key in (name, name.split(".")[0]):
            if key in IMPORT_RULES:
                tier, need, why = IMPORT_RULES[key]
                self.add(f"import_{key}", tier, f"imports {name}: {why}", node, need)
                return

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(alias.name, node)
            self.aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level:
            self.add("relative_import", A, "relative import reaches outside the skill", node,
                     "files_outside")
        self._module(mod, node)
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{mod}.{alias.name}"
            self._dotted_rule(f"{mod}.{alias.name}", node)
        self.generic_visit(node)

    def _resolve(self, dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        real = self.aliases.get(head, head)
        return f"{real}.{rest}" if rest else real

    def _dotted_rule(self, name: str, node: ast.AST) -> None:
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
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and not kw.value.value):
                self.add("shell_true", B, "shell=True runs a shell", node)
        self.generic_visit(node)

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


def _regex_findings(source: str, filename: str) -> list[Finding]:
    out = []
    for rule, pattern, tier, need, why in REGEX_RULES:
        for m in re.finditer(pattern, source):
            line = source.count("\n", 0, m.start()) + 1
            out.append(Finding(rule, tier, why, line, need, "gate", filename))
    return out


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


def check_code(source: str, *, filename: str = "<skill>", with_bandit: bool = True) -> Verdict:
    """Run every gate over ``source``. A syntax error is not a finding: pytest reports it."""
    found = _regex_findings(source, filename)
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError):
        tree = None
    if tree is not None:
        visitor = _Visitor(filename)
        visitor.visit(tree)
        found.extend(visitor.found)
        if with_bandit:
            found.extend(bandit_findings(source, filename))
    unique = dict.fromkeys(found)  # same rule, same line, reported once
    return Verdict(tuple(unique))
