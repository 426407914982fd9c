"""Skill versions: a skill that exists is never overwritten silently.

A new version (from a directive, ``:improve`` or the user replacing one) is kept only if it
also passes the tests of the version it follows, and those it inherited; its files are kept
under ``versions/<name>/`` with a record in memory (when, what made it, which model, its
status and evidence). The files in ``skills/`` are always the current version's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.changes import change, current, hashes, kept_files
from agent.library import SkillLibrary
from agent.memory import Memory, now
from safety import SafetyOutcome

MODEL_MAX, NOTE_MAX = 200, 500  # the schema's limits on a version's model name and note
Execute = Callable[..., SafetyOutcome]  # (name, module, tests, extra_tests=...) -> gates + sandbox


def find(skill: dict[str, Any], number: int) -> dict[str, Any] | None:
    return next((v for v in skill.get("versions") or [] if v["version"] == number), None)


def ensure_versioned(memory: Memory, library: SkillLibrary, name: str) -> dict[str, Any] | None:
    """A saved skill from before versions were kept becomes version 1 (origin ``existing``);
    returns the skill (None when it has no files to keep)."""
    skill = memory.get_skill(name)
    if skill is None or skill.get("versions"):
        return skill
    with change(memory, library, name, "version"):
        skill = memory.get_skill(name)  # again, under the skill's lock: another agent may have done it
        code, tests = library.source(name), library.tests(name)
        if skill is None or skill.get("versions") or code is None or tests is None:
            return skill
        module, test = library.version_paths(name, 1)
        record = {"version": 1, "created_at": skill["updated_at"], "origin": "existing", "status": skill["status"],
                  "model": None, "path": module, "test_path": test, "iterations": skill["iterations"],
                  "note": "the files found when versions began", "signature": skill["signature"],
                  "description": skill["description"], "sha256": hashes(code, tests)}
        if skill.get("evidence"):
            record["evidence"] = skill["evidence"]
        library.keep_file(module, code)
        library.keep_file(test, tests)
        memory.add_version(name, record)
    return memory.get_skill(name)


def inherited_tests(library: SkillLibrary, name: str, record: dict[str, Any] | None,
                    skill: dict[str, Any] | None = None) -> dict[str, str]:
    """The test files of the versions ``record`` inherited, as extra test files for a run
    (``test_<name>_v<N>.py``); a file equal to another one, or one that does not verify, is not run."""
    found: dict[str, str] = {}
    own = library.tests(name)
    for number in (record or {}).get("inherited") or []:
        kept = find(skill or {}, number)
        files = kept_files(library, name, kept) if kept else None
        if isinstance(files, tuple) and files[1] != own and files[1] not in found.values():
            found[f"test_{name}_v{number}.py"] = files[1]
    return found


def incompatibility(memory: Memory, library: SkillLibrary, execute: Execute, name: str, code: str) -> str | None:
    """Why ``code`` cannot follow the current version of ``name`` (it fails that version's tests,
    or the tests it inherited), or None when it passes them or there is nothing to follow."""
    skill = ensure_versioned(memory, library, name)
    tests = library.tests(name)
    record = current(skill)
    if skill is None or tests is None or library.source(name) is None or record is None:
        return None
    outcome = execute(name, code, tests, extra_tests=inherited_tests(library, name, record, skill))
    if outcome.blocked or outcome.run is None:
        return outcome.reason or "it could not run"
    if outcome.run.ok:
        return None
    from agent.analysis import report_from_outcome  # noqa: PLC0415 - analysis imports the loop's types

    report = report_from_outcome(outcome)
    return f"it fails v{record['version']}'s tests: {report['error'] or 'see :history'}"[:480]


def keep(memory: Memory, library: SkillLibrary, name: str, code: str, tests: str, *, origin: str,
         status: str, model: str | None, evidence: dict | None = None, iterations: int = 0,
         directive_id: str | None = None, note: str = "", compatible: bool = True,
         **fields: Any) -> int:
    """Save ``code`` and ``tests`` as the next version of ``name`` and make it current; returns
    its number. ``compatible``: it passed the previous version's tests, which it inherits. The
    same directive keeping the same files again (its save resumed after a kill) is that version."""
    ensure_versioned(memory, library, name)
    sha = hashes(code, tests)
    # kept files first, then the record (the commit), then the copies in skills/ (see agent.changes);
    # the number is chosen under the skill's change lock: another agent's save cannot take it too
    with change(memory, library, name, "save"):
        skill = memory.get_skill(name)
        again = next((v for v in (skill or {}).get("versions") or []
                      if directive_id and v.get("directive_id") == directive_id and v.get("sha256") == sha), None)
        if again is not None and skill is not None and skill.get("version") == again["version"]:
            library.save(name, code, tests)
            return again["version"]
        previous = current(skill)
        number = max((v["version"] for v in (skill or {}).get("versions") or []), default=0) + 1
        module, test = library.version_paths(name, number)
        inherited = ([previous["version"], *previous.get("inherited", [])] if previous and compatible else [])
        record: dict[str, Any] = {"version": number, "created_at": now(), "origin": origin, "status": status,
                                  "model": (model or "")[:MODEL_MAX] or None, "path": module, "test_path": test,
                                  "iterations": iterations, "directive_id": directive_id, "note": note[:NOTE_MAX],
                                  "inherited": list(dict.fromkeys(inherited)), "sha256": sha}
        for key in ("signature", "description"):
            if key in fields:
                record[key] = fields[key]
        if evidence is not None:
            record["evidence"] = evidence
            fields["evidence"] = evidence
        library.keep_file(module, code)
        library.keep_file(test, tests)
        memory.add_version(name, record, status=status, iterations=iterations, path=library.module_path(name),
                           test_path=library.test_path(name), dependencies=library.dependencies(code), **fields)
        library.save(name, code, tests)
    return number


def keep_passing(memory: Memory, library: SkillLibrary, state: dict[str, Any], *, model: str | None,
                 origin: str, note: str, compatible: bool = True) -> int:
    """Keep the loop's passing code (``state``: its spec, code, report) as the next version."""
    from agent.checks import status_of, test_module  # noqa: PLC0415 - checks imports the loop's types

    spec, report = state["spec"], state["report"] or {}
    return keep(memory, library, spec["name"], state["code"], test_module(spec, with_holdout=True),
                origin=origin, status=status_of(spec["evidence"]), model=model, evidence=spec["evidence"],
                iterations=state.get("iteration", 0), directive_id=state.get("directive_id"), note=note,
                compatible=compatible, description=spec["description"], signature=spec["signature"],
                sandbox_level=report.get("level") or None, last_tested=now(), probes=spec["probes"])


def restore(memory: Memory, library: SkillLibrary, name: str, number: int) -> dict[str, Any]:
    """Make kept version ``number`` current again (its files back in ``skills/``, verified first);
    returns its record. Until the retest that follows, it has the status it was kept with.
    Raises LookupError (no such version) or ValueError (its files are gone or damaged)."""
    with change(memory, library, name, "rollback"):
        record = find(memory.get_skill(name) or {}, number)
        if record is None:
            raise LookupError(number)
        files = kept_files(library, name, record)
        if isinstance(files, str):
            raise ValueError(files)
        fields: dict[str, Any] = {"version": number, "status": record["status"],
                                  "dependencies": library.dependencies(files[0])}
        for key in ("evidence", "signature", "description"):
            if record.get(key):
                fields[key] = record[key]
        memory.upsert_skill(name, **fields)
        library.save(name, *files)
    return record


def amend(memory: Memory, library: SkillLibrary, name: str, tests: str, **fields: Any) -> None:
    """The current version gained tests (confirmed or added examples): keep them as a new file of
    that version, switch its record to them, and set ``fields`` (status, evidence...) on the skill
    and its record, in one update; then the copy in ``skills/``."""
    ensure_versioned(memory, library, name)

    with change(memory, library, name, "examples"):
        record = current(memory.get_skill(name))
        if record is None:
            raise LookupError(name)
        files = kept_files(library, name, record)
        if isinstance(files, str):
            raise ValueError(files)
        number, code, old = record["version"], files[0], record["test_path"]
        path = library.amended_test_path(name, number, tests)
        mirrored = {k: v for k, v in fields.items() if k in ("status", "evidence")}

        def apply(doc: dict[str, Any]) -> None:
            entry = next(s for s in doc["skills"] if s["name"] == name)
            for kept in entry.get("versions") or []:
                if kept["version"] == number:
                    kept.update(mirrored, test_path=path, sha256=hashes(code, tests))
            entry.update(fields, updated_at=now())
        library.keep_file(path, tests)
        memory.update(apply)
        library.save(name, code, tests)
        if old != path:
            library.unlink(old)
