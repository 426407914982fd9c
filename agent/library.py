"""The skill library on disk: ``skills/<name>.py`` with ``skills/tests/test_<name>.py`` beside it.

Memory holds each skill's status; this module holds its files and finds the skills relevant
to a new goal (BM25 over name, signature and description, via ``rank_bm25``).
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.rank import rank
from safety.paths import resolve_inside, safe_read_text, safe_write_text, validate_skill_name


class SkillLibrary:
    """Files of the skills in one workspace. Every path goes through the workspace jail."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.skills_dir = workspace / "skills"
        (self.skills_dir / "tests").mkdir(parents=True, exist_ok=True)  # bound read-only in the sandbox

    def module_path(self, name: str) -> str:
        return f"skills/{validate_skill_name(name)}.py"

    def test_path(self, name: str) -> str:
        return f"skills/tests/test_{validate_skill_name(name)}.py"

    def save(self, name: str, code: str, tests: str) -> Path:
        """Write the module and its tests; returns the module's absolute path."""
        path = safe_write_text(self.workspace, self.module_path(name), code)
        safe_write_text(self.workspace, self.test_path(name), tests)
        return path

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

    @staticmethod
    def relevant(goal: str, skills: list[dict], n: int = 3, *, exclude: str | None = None) -> list[dict]:
        """The ``n`` working skills most relevant to ``goal`` (BM25), best first; none if no overlap.
        ``exclude``: the skill being written (importing itself would be a circular import)."""
        working = [s for s in skills if s.get("status") == "working" and s["name"] != exclude]
        found = rank(goal, [f"{s['name']} {s.get('signature', '')} {s.get('description', '')}" for s in working], n)
        return json.loads(json.dumps([working[i] for i in found]))  # copies: memory's document is not for changing


def importable(skills: list[dict]) -> str:
    """Reusable skills as the import lines a completion model sees above the stub ("" if none)."""
    return "".join(f"from {s['name']} import {s['name']}  # {s.get('signature') or s['name']}: "
                   f"{s.get('description', '')}\n" for s in skills)


def describe_skills(skills: list[dict]) -> str:
    """The prompt fragment listing reusable skills as importable code ("" when there are none)."""
    if not skills:
        return ""
    return f"Existing skills you may import and reuse:\n```python\n{importable(skills)}```"
