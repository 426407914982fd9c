"""The agent's memory, one module per concern (read them in this order):

- ``schema``: memory.json's JSON Schema; checking a whole document or only what changed;
- ``migrations``: older memory.json versions to the current one;
- ``files``: atomic writes, hard-link backups, process locks, debris from killed writes;
- ``history``: history/history.sqlite: the full failure log, each directive's audit trail;
- ``similar``: which recent failures resemble a goal or an error, and the diffs that fixed them;
- ``store``: ``Memory``, which puts them together behind one lock.
"""

from agent.memory.history import History
from agent.memory.migrations import MIGRATIONS, migrate
from agent.memory.schema import (
    CURRENT_VERSION,
    ERROR_MAX,
    SNIPPET_MAX,
    check,
    empty,
    new_skill,
    now,
    one_line,
    truncate,
    validator,
)
from agent.memory.store import Memory, MemoryLocked

__all__ = ["CURRENT_VERSION", "ERROR_MAX", "MIGRATIONS", "SNIPPET_MAX", "History", "Memory",
           "MemoryLocked", "check", "empty", "migrate", "new_skill", "now", "one_line",
           "truncate", "validator"]
