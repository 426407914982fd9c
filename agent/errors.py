"""Domain errors. Library code raises these; only the CLI/REPL turns them into one-line messages.

Errors the *model* caused (unusable reply, failing code) are not exceptions: they are data fed
back into the loop. These are for conditions the user must fix.
"""


class AgentError(Exception):
    """Base class: str(err) is a one-line message that says what to fix."""


class ConfigError(AgentError):
    """Bad flag, environment variable or TOML value."""


class ModelUnavailable(AgentError):
    """The model cannot be reached or loaded (server down, model not pulled, bad GGUF, bad key).

    A directive that hits this stays ``pending``; the REPL stays up.
    """


class MemoryCorrupted(AgentError):
    """memory.json is not valid JSON or does not match its schema. Never silently overwritten."""


class UnsafePath(AgentError):
    """A path the agent was asked to touch resolves outside the workspace."""
