"""The skill library on disk: ``skills/<name>.py`` with ``skills/tests/test_<name>.py`` beside it,
and every version kept under ``versions/<name>/`` (``v<N>.py`` and ``v<N>_test.py``).

``skills/`` is a package: a skill, a test or a script run from the workspace imports another
skill as ``from skills.<name> import <fn>``. Memory holds each skill's status and versions; this
module holds the files, reads a module's dependencies, and finds the skills relevant to a goal
(the shared BM25 ranker, ``agent.rank``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import stat
from collections.abc import Container
from pathlib import Path

from agent import faults
from agent.errors import UnsafePath
from agent.rank import rank
from safety.paths import (
    SKILL_NAME,
    InvalidSkillName,
    resolve_inside,
    safe_read_text,
    safe_rmtree,
    safe_write_text,
    validate_skill_name,
)

PACKAGE_INIT = '"""The agent\'s saved skills: ``from skills.<name> import <name>``."""\n'


def skill_document(skill: dict) -> str:
    """The text a skill is ranked by: its name, signature and description."""
    return f"{skill['name']} {skill.get('signature', '')} {skill.get('description', '')}"


# a kept file: versions/<name>/v<N>.py, v<N>_test.py, or amended tests v<N>_test_<12 hex>.py
KEPT_FILE = re.compile(r"versions/[a-z_][a-z0-9_]{0,63}/v[1-9][0-9]{0,8}(_test(_[0-9a-f]{12})?)?\.py")


def digest(text: str) -> str:
    """The SHA-256 a record keeps of a file's text (as UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


SKILL_REFERENCE = re.compile(r"\bskills\.([a-z_][a-z0-9_]{0,63})\b")


def dependencies(source: str, saved: Container[str] = (), *, strings: bool = False) -> list[str]:
    """The saved skills a module imports, in the order first seen: ``from skills.x import ...``,
    ``import skills.x``, ``from skills import x``, and a top-level import of a name in ``saved``
    (the form skills used before the package). With ``strings`` (for the gates, which would
    rather read one skill too many), also a saved ``x`` named as ``skills.x`` in any string,
    which is what ``mock.patch`` imports by name; a docstring mentioning one counts too, so that
    is never recorded as an import. None when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            head, _, rest = node.module.partition(".")
            if node.module == "skills":
                names = [alias.name for alias in node.names]
            elif head == "skills":
                names = [rest.split(".")[0]]
            elif head in saved:
                names = [head]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                head, _, rest = alias.name.partition(".")
                names += [rest.split(".")[0]] if head == "skills" and rest else [head] if head in saved else []
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str) and "skills." in node.value:
            names = [name for name in SKILL_REFERENCE.findall(node.value) if name in saved]
        for name in names:
            try:
                validate_skill_name(name)
            except InvalidSkillName:
                continue
            if name not in found:
                found.append(name)
    return found


class _Saved:
    """``name in saved``: whether ``skills/<name>.py`` exists (``exclude`` never does)."""

    def __init__(self, skills_dir: Path, exclude: str | None) -> None:
        self.skills_dir, self.exclude = skills_dir, exclude

    def __contains__(self, name: object) -> bool:
        return (isinstance(name, str) and name != self.exclude and name != "__init__"
                and SKILL_NAME.fullmatch(name) is not None and (self.skills_dir / f"{name}.py").is_file())


class SkillLibrary:
    """Files of the skills in one workspace. Every path goes through the workspace jail."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.skills_dir = workspace / "skills"
        self._digests: dict[str, tuple[tuple[int, int, int, int], str | None]] = {}
        try:
            (self.skills_dir / "tests").mkdir(parents=True, exist_ok=True)  # bound read-only in the sandbox
        except FileExistsError:
            raise UnsafePath(f"{self.skills_dir / 'tests'} (or {self.skills_dir}) is not a folder: move it away "
                             "so that the agent can keep its skills there") from None
        init = self.skills_dir / "__init__.py"
        if not init.exists() and not init.is_symlink():
            safe_write_text(workspace, "skills/__init__.py", PACKAGE_INIT)

    def module_path(self, name: str) -> str:
        return f"skills/{validate_skill_name(name)}.py"

    def test_path(self, name: str) -> str:
        return f"skills/tests/test_{validate_skill_name(name)}.py"

    def version_paths(self, name: str, version: int) -> tuple[str, str]:
        """Where version ``version`` of a skill is first kept: its module and its tests."""
        base = f"versions/{validate_skill_name(name)}/v{int(version)}"
        return f"{base}.py", f"{base}_test.py"

    def amended_test_path(self, name: str, version: int, tests: str) -> str:
        """Where amended tests of a kept version go: a new file (kept files never change), named
        by its content, so that writing it again is the same file."""
        return f"versions/{validate_skill_name(name)}/v{int(version)}_test_{digest(tests)[:12]}.py"

    def save(self, name: str, code: str, tests: str) -> Path:
        """Write the module and its tests into ``skills/`` (the current version's copy); returns
        the module's absolute path."""
        for relative in (self.module_path(name), self.test_path(name)):
            target = self._entry(relative)
            if target.is_dir() and not target.is_symlink():  # a folder in a file's place: nothing to keep
                self.unlink(relative)
        faults.step(f"write {self.module_path(name)}")
        path = safe_write_text(self.workspace, self.module_path(name), code)
        faults.step(f"write {self.test_path(name)}")
        safe_write_text(self.workspace, self.test_path(name), tests)
        return path

    def keep_file(self, relative: str, text: str) -> None:
        """Write one kept file under ``versions/``, durably: a record may name it only after this."""
        faults.step(f"write {relative}")
        safe_write_text(self.workspace, relative, text, durable=True)

    def _entry(self, relative: str) -> Path:
        """The path of a library entry, its folder resolved inside the workspace and the entry
        itself not (a link is the link, never what it names)."""
        folder, _, base = relative.rpartition("/")
        return resolve_inside(self.workspace, folder) / base

    @staticmethod
    def _kept_path(name: str, relative: str) -> bool:
        """Whether ``relative`` (a path read from memory) is one of ``name``'s kept files."""
        return KEPT_FILE.fullmatch(relative) is not None and relative.split("/")[1] == validate_skill_name(name)

    def kept(self, name: str, relative: str) -> str | None:
        """A file kept under ``versions/<name>/`` (a path read from memory, checked here), or None
        when it is gone or the path is not one of that skill's kept files."""
        if not self._kept_path(name, relative):
            return None
        try:
            return self._read(relative)
        except (UnsafePath, OSError):
            return None

    def kept_digest(self, name: str, relative: str) -> str | None:
        """``kept``'s file as its digest (see ``digest_of``)."""
        return self.digest_of(relative) if self._kept_path(name, relative) else None

    def digest_of(self, relative: str) -> str | None:
        """The SHA-256 of a library file's text (None when it is gone or not a plain file), cached
        while the file's identity (inode, size, mtime, ctime) is unchanged: :skills checks every
        skill's files."""
        try:
            st = os.lstat(self._entry(relative))
        except (OSError, UnsafePath):
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._digests.get(relative)
        if cached is not None and cached[0] == key:
            return cached[1]
        text = self._read(relative) if stat.S_ISREG(st.st_mode) else None
        value = None if text is None else digest(text)
        self._digests[relative] = (key, value)
        return value

    def kept_names(self, name: str) -> list[str]:
        """The workspace-relative paths of the files under ``versions/<name>/`` (links included)."""
        folder = self.workspace / "versions" / validate_skill_name(name)
        if folder.is_symlink() or not folder.is_dir():
            return []
        return sorted(f"versions/{name}/{entry.name}" for entry in os.scandir(folder))

    def unlink(self, relative: str) -> bool:
        """Remove one entry of the library (a file, a link, never followed, or a folder); whether
        there was one."""
        path = self._entry(relative)
        if not (path.exists() or path.is_symlink()):
            return False
        faults.step(f"remove {relative}")
        if path.is_dir() and not path.is_symlink():
            safe_rmtree(path)
        else:
            path.unlink()
        return True

    def remove(self, name: str) -> bool:
        """Delete a skill's files: the module, its tests and every kept version; whether any was there."""
        found = False
        for relative in (self.module_path(name), self.test_path(name), f"versions/{validate_skill_name(name)}"):
            found = self.unlink(relative) or found
        return found

    def source(self, name: str) -> str | None:
        """The saved module's source, or None if the skill has no file."""
        return self._read(self.module_path(name))

    def tests(self, name: str) -> str | None:
        """The saved tests' source, or None."""
        return self._read(self.test_path(name))

    def _read(self, relative: str) -> str | None:
        if not resolve_inside(self.workspace, relative).is_file():
            return None
        return safe_read_text(self.workspace, relative)

    def saved(self, exclude: str | None = None) -> _Saved:
        """The skills with a module in ``skills/``, as a container asked name by name (every test
        run asks: a listing of the directory would cost that run a scan of every skill)."""
        return _Saved(self.skills_dir, exclude)

    def dependencies(self, source: str) -> list[str]:
        """The saved skills ``source`` uses (see ``dependencies``)."""
        return dependencies(source, self.saved())

    def closure(self, *sources: str, exclude: str | None = None) -> dict[str, str]:
        """The saved skills the ``sources`` use, directly or through each other (name -> source);
        ``exclude``: the skill under test, whose tests import it by name (its saved version,
        if the code imports that too, was gated when it was saved, for the same skill's grants)."""
        found: dict[str, str] = {}
        saved = self.saved(exclude)
        todo = [name for source in sources for name in dependencies(source, saved, strings=True)]
        while todo:
            name = todo.pop()
            if name in found or name == exclude:
                continue
            dep = self.source(name)
            if dep is not None:
                found[name] = dep
                todo.extend(dependencies(dep, saved, strings=True))
        return found

    @staticmethod
    def relevant(goal: str, skills: list[dict], n: int = 3, *, exclude: str | None = None) -> list[dict]:
        """The ``n`` working skills most relevant to ``goal`` (BM25), best first; none if no overlap.
        ``exclude``: the skill being written (importing itself would be a circular import)."""
        working = [s for s in skills if s.get("status") == "working" and s["name"] != exclude]
        found = rank(goal, [skill_document(s) for s in working], n)
        return json.loads(json.dumps([working[i] for i in found]))  # copies: memory's document is not for changing


def importable(skills: list[dict]) -> str:
    """Reusable skills as the import lines a model sees above its code ("" if none)."""
    return "".join(f"from skills.{s['name']} import {s['name']}  # {s.get('signature') or s['name']}: "
                   f"{s.get('description', '')}\n" for s in skills)


def describe_skills(skills: list[dict]) -> str:
    """The prompt fragment listing reusable skills as importable code ("" when there are none)."""
    if not skills:
        return ""
    return f"Existing skills you may import and reuse:\n```python\n{importable(skills)}```"
