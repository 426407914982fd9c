"""Prompt templates live as files beside this module and are rendered strictly.

``string.Template.substitute`` raises KeyError on a missing variable, so a template and its
caller can never silently drift apart. Literal dollars in a template are written ``$$``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from string import Template


@cache
def _template(name: str) -> Template:
    return Template(resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8"))


def render(template: str, /, **variables: object) -> str:
    """Render ``<name>.txt`` with every ``$variable`` supplied (missing ones raise KeyError)."""
    return _template(template).substitute({k: str(v) for k, v in variables.items()})
