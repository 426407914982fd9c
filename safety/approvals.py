"""Tier-2 approvals: ask the user, remember "always"/"deny" with the skill, audit every decision."""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from filelock import FileLock

NEED_TEXT = {"network": "network access", "shell": "running a shell command / subprocess",
             "files_outside": "files outside the workspace", "install": "installing a package"}

# What approving a need really grants, said in the prompt: the sandbox widens for `network`
# only, and only to IP networking; the other needs let the code run, still confined.
GRANTS = {
    "network": "the host's IPv4/IPv6 network for this run (no local unix or abstract sockets, "
               "no files outside the workspace)",
    "shell": "starting programs inside the sandbox (only what is installed under /usr; still no "
             "files outside the workspace, no network)",
    "files_outside": "nothing more: the sandbox cannot grant files outside the workspace; the code "
                     "runs, and any access outside fails",
    "install": "nothing more: the sandbox cannot install packages; the code runs, and an install "
               "fails",
}


class Decision(str, enum.Enum):  # noqa: UP042 - str() and the stored values stay as they are
    ONCE = "once"
    ALWAYS = "always"
    DENY = "deny"


@dataclass(frozen=True)
class ApprovalRequest:
    skill: str
    need: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{NEED_TEXT.get(self.need, self.need)} for skill {self.skill}"

    @property
    def grants(self) -> str:
        """Exactly what allowing this gives the code (for the prompt)."""
        return GRANTS.get(self.need, "nothing the sandbox can widen")


class GrantStore(Protocol):
    def load_grants(self, skill: str) -> dict[str, str]: ...
    def save_grant(self, skill: str, need: str, decision: str) -> None: ...
    def revoke_grant(self, skill: str, need: str) -> bool: ...
    def all_grants(self) -> dict[str, dict[str, str]]: ...


class JsonGrantStore:
    """A GrantStore in one JSON file, under a file lock (agent.memory.Memory is the real one)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock")

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _save(self, data: dict[str, dict[str, str]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)

    def load_grants(self, skill: str) -> dict[str, str]:
        return dict(self._load().get(skill, {}))

    def save_grant(self, skill: str, need: str, decision: str) -> None:
        with self._lock:
            data = self._load()
            data.setdefault(skill, {})[need] = decision
            self._save(data)

    def revoke_grant(self, skill: str, need: str) -> bool:
        with self._lock:
            data = self._load()
            if need not in data.get(skill, {}):
                return False
            del data[skill][need]
            if not data[skill]:
                del data[skill]
            self._save(data)
            return True

    def all_grants(self) -> dict[str, dict[str, str]]:
        return self._load()


class Approvals:
    """Resolves tier-2 needs: a stored answer, then ``auto_approve``, then ``ask``; else deny."""

    def __init__(self, store: GrantStore, audit_log: Path,
                 ask: Callable[[ApprovalRequest], Decision] | None = None,
                 auto_approve: bool = False) -> None:
        self.store = store
        self.audit_log = Path(audit_log)
        self.ask = ask
        self.auto_approve = auto_approve

    def resolve(self, skill: str, needs: frozenset[str], *, allow_auto: bool = True,
                details: dict[str, str] | None = None) -> tuple[frozenset[str], frozenset[str]]:
        """(granted, denied). One audit line per need. ``allow_auto=False`` ignores --yes."""
        granted, denied = set(), set()
        stored = self.store.load_grants(skill)
        for need in sorted(needs):
            request = ApprovalRequest(skill, need, (details or {}).get(need, ""))
            decision, by = self._decide(request, stored.get(need), allow_auto)
            if decision in (Decision.ALWAYS, Decision.DENY) and by == "user":
                self.store.save_grant(skill, need, decision.value)
            (denied if decision == Decision.DENY else granted).add(need)
            self._audit(request, decision, by)
        return frozenset(granted), frozenset(denied)

    def _decide(self, request: ApprovalRequest, stored: str | None,
                allow_auto: bool) -> tuple[Decision, str]:
        if stored in (Decision.ALWAYS.value, Decision.DENY.value):
            return Decision(stored), "stored"
        if self.auto_approve and allow_auto:
            return Decision.ONCE, "auto_approve"
        if self.ask is None:
            return Decision.DENY, "no_approver"
        try:
            return Decision(self.ask(request)), "user"
        except ValueError:
            return Decision.DENY, "user"

    def revoke(self, skill: str, need: str) -> bool:
        removed = self.store.revoke_grant(skill, need)
        if removed:
            self._audit(ApprovalRequest(skill, need), None, "revoke")
        return removed

    def grants(self) -> dict[str, dict[str, str]]:
        """For :approvals: skill -> need -> "always" | "deny"."""
        return self.store.all_grants()

    def _audit(self, request: ApprovalRequest, decision: Decision | None, by: str) -> None:
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "skill": request.skill,
                "need": request.need, "decision": decision.value if decision else "revoked",
                "by": by, "request": str(request)}
        with open(self.audit_log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
