"""What ``:skills`` and ``:show`` print, as prompt_toolkit fragments: ``(style, text)`` pairs.

The REPL prints them with ``print_formatted_text``: at a terminal the styles colour them
(status colours, bold headings, Python highlighted by Pygments; no colours with NO_COLOR); to a
file or pipe (prompt_toolkit's ``PlainTextOutput``) the same text comes out without styles. The
text never depends on the styles: the plain output is the coloured one less its escape codes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from itertools import repeat

from prompt_toolkit.formatted_text import PygmentsTokens, StyleAndTextTuples, to_formatted_text
from prompt_toolkit.utils import get_cwidth

from agent.checks import describe_evidence

STATUS_STYLES = {"working": "class:status.working ansigreen", "untested": "class:status.untested ansiyellow",
                 "failed": "class:status.failed ansired",
                 "broken_dependency": "class:status.broken_dependency ansimagenta",
                 "damaged": "class:status.damaged ansired bold"}
HEADING = "bold"
SIGNATURE_CHARS = 40  # a column of :skills; longer text ends in "…"
DESCRIPTION_CHARS = 50
NOTE_CHARS = 60


def status_style(status: str) -> str:
    return STATUS_STYLES.get(status, "")


def clip(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters (a cut ends in "…")."""
    if "\n" in text or "\t" in text or "\r" in text:
        text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def table(columns: Sequence[Sequence[str]], styles: Mapping[int, Sequence[str]] | None = None,
          header: Sequence[str] = (), indent: str = "") -> StyleAndTextTuples:
    """Columns of cells as aligned rows, each line ending in a newline; ``header`` in bold.

    Columns are aligned by display width (a wide character takes two), two spaces apart, and a
    line has no trailing spaces. ``styles`` gives a column its cells' styles (padding stays
    unstyled); the other columns' cells of a row are joined into one fragment, so 10,000 rows
    cost a few fragments each and are built column by column (``:skills`` stays fast)."""
    styles = styles or {}
    rows = len(columns[0]) if columns else 0
    head: list[str] = []
    segments: list[list[str]] = []  # the unstyled text of each row before each styled cell, and after the last
    styled: list[tuple[Sequence[str], Sequence[str]]] = []
    pending: list[list[str]] = []
    for i, column in enumerate(columns):
        title = header[i] if header else ""
        cells, pads = list(column), None
        if i == len(columns) - 1:  # the last column is not padded
            head.append(title)
        else:
            uniques = {*cells, title}
            wide = {} if "".join(uniques).isascii() else {  # a wide character: display width > len
                cell: get_cwidth(cell) - len(cell) for cell in uniques if not cell.isascii()}
            room = 2 + (max(map(len, uniques)) if not wide else max(len(c) + wide.get(c, 0) for c in uniques))
            head.append(title.ljust(room - wide.get(title, 0)))
            if i not in styles:
                cells = (list(map(str.ljust, cells, repeat(room))) if not wide else list(map(
                    {cell: cell.ljust(room - wide.get(cell, 0)) for cell in uniques}.__getitem__, cells)))
            else:
                pad = {cell: " " * (room - len(cell) - wide.get(cell, 0)) for cell in uniques}
                pads = list(map(pad.__getitem__, cells))
        if i in styles:
            segments.append(list(map("".join, zip(*pending, strict=True))) if pending else [""] * rows)
            styled.append((styles[i], cells))
            pending = [pads] if pads else []
        else:
            pending.append(cells)
    segments.append(list(map("".join, zip(*pending, strict=True))) if pending else [""] * rows)
    out: StyleAndTextTuples = [(HEADING, indent + "".join(head).rstrip() + "\n")] if header else []
    if not rows:
        return out
    ends = list(map(str.rstrip, segments[-1]))
    if not styled:
        return out + [("", indent + ("\n" + indent).join(ends) + "\n")]
    before = indent
    for row, end in enumerate(ends):
        for segment, (cell_styles, cells) in zip(segments, styled, strict=False):
            out.append(("", before + segment[row]))
            out.append((cell_styles[row], cells[row]))
            before = ""
        before = end + "\n" + indent
    out.append(("", before[:len(before) - len(indent)]))
    return out


def stamp(value: str | None, default: str = "never") -> str:
    """An ISO timestamp to the minute, for people: ``2026-12-01 15:34``."""
    return value[:16].replace("T", " ") if value else default


def version_label(skill: dict) -> str:
    """``v2``; ``v2 of 3`` when the current version is not the latest; ``-`` before versions."""
    current, kept = skill.get("version"), len(skill.get("versions") or ())
    if not current:
        return "-"
    return f"v{current}" if kept <= current else f"v{current} of {kept}"


def skills_table(skills: Sequence[dict], width: int | None = None) -> StyleAndTextTuples:
    """The ``:skills`` table, in the order given: status coloured, long text cut to its column.
    Within ``width`` columns (of display; 20 or more): ``fit`` cuts and drops columns in the
    order of ``FITTING``; a cut ends in "…"."""
    evidence_text: dict[tuple[int, ...], str] = {}  # thousands of skills share a few evidence counts

    def evidence(counts: dict | None) -> str:
        if not counts:
            return "-"
        key = tuple(counts.values())
        if key not in evidence_text:
            evidence_text[key] = describe_evidence(counts)
        return evidence_text[key]

    def cut(text: str | None, limit: int) -> str:
        return text if text and len(text) <= limit and text.isprintable() else clip(text or "", limit)

    statuses = [s["status"] for s in skills]
    columns = [[s["name"] for s in skills], statuses,
               ["-" if not s.get("version") else version_label(s) for s in skills],
               [cut(s.get("signature"), SIGNATURE_CHARS) for s in skills],
               [evidence(s.get("evidence")) for s in skills],
               [stamp(s.get("last_tested")) for s in skills],
               [cut(s.get("description"), DESCRIPTION_CHARS) for s in skills]]
    header = ["name", "status", "version", "signature", "evidence", "last tested", "description"]
    if width is not None:
        columns, header = fit(columns, header, width)
    return table(columns, {1: list(map(status_style, statuses))}, header=header)


NAME, STATUS, VERSION, SIGNATURE, EVIDENCE, LAST_TESTED, DESCRIPTION = range(7)
# What :skills does, in order, until its rows fit: (column, least characters) cuts it to no less
# than that, (column, 0) drops it. Free text goes first, cut, for :show has all of it: the
# description, then the signature (24 still shows most of the parameters), then the evidence (18
# still shows its first count). Then whole columns, the least use for choosing and calling a skill
# first: when it was last tested, its version (:versions), its evidence, its description (the
# name says what it does, the signature how to call it); then the signature, cut, then dropped.
# The name and status stay: the status cut to 7 ("damaged", "working" stay whole), and last the
# name, which :run needs whole.
FITTING = ((DESCRIPTION, 12), (SIGNATURE, 24), (EVIDENCE, 18), (LAST_TESTED, 0), (VERSION, 0), (EVIDENCE, 0),
           (DESCRIPTION, 0), (SIGNATURE, 12), (SIGNATURE, 0), (STATUS, 7), (NAME, 4))


def _display(cell: str) -> int:
    return len(cell) if cell.isascii() else get_cwidth(cell)


def _cut(cell: str, room: int) -> str:
    """``cell`` in at most ``room`` columns of display (a cut ends in "…")."""
    if _display(cell) <= room:
        return cell
    kept, used = [], 1
    for char in cell:
        used += get_cwidth(char)
        if used > room:
            break
        kept.append(char)
    return "".join(kept) + "…"


def fit(columns: list[list[str]], header: Sequence[str], width: int) -> tuple[list[list[str]], list[str]]:
    """The columns and header of ``table`` so that no row is wider than ``width``: the steps of
    ``FITTING`` taken in order, each only as far as needed, until the rows fit."""
    kept: dict[int, tuple[list[str], str]] = dict(enumerate(zip(columns, header, strict=True)))
    widths = {i: max(_display(title), max(map(_display, cells), default=0)) for i, (cells, title) in kept.items()}

    def over() -> int:
        return sum(widths.values()) + 2 * (len(widths) - 1) - width

    for index, least in FITTING:
        if over() <= 0:
            break
        if index not in kept:
            continue
        if not least:
            del kept[index], widths[index]
            continue
        room = max(least, widths[index] - over())
        if room < widths[index]:
            cells, title = kept[index]
            kept[index] = ([_cut(cell, room) for cell in cells], _cut(title, room))
            widths[index] = room
    return [cells for cells, _ in kept.values()], [title for _, title in kept.values()]


def two_columns(rows: Sequence[tuple[str, str]], width: int, indent: str = "  ") -> str:
    """``(left, right)`` rows as two aligned columns in ``width`` characters, the right one wrapped
    within its column; where that column would be narrower than 24, each right text goes under
    its left one, indented."""
    left = max((len(first) for first, _ in rows), default=0) + 2
    room = width - len(indent) - left
    lines = []
    for first, second in rows:
        if room >= 24:
            wrapped = textwrap.wrap(second, room) or [""]
            lines.append((indent + first.ljust(left) + wrapped[0]).rstrip())
            lines += [indent + " " * left + more for more in wrapped[1:]]
        else:
            lines.append(indent + first)
            lines += [indent + "    " + more for more in textwrap.wrap(second, max(width - len(indent) - 4, 20))]
    return "".join(line + "\n" for line in lines)


def highlighted(code: str) -> StyleAndTextTuples:
    """Python source as Pygments tokens (``class:pygments.*`` styles), ending in a newline."""
    code = code.rstrip()
    if not code:
        return [("", "(empty)\n")]
    from pygments import lex  # here, not at start-up: importing its lexers takes ~20 ms
    from pygments.lexers.python import PythonLexer

    return to_formatted_text(PygmentsTokens(list(lex(code + "\n", PythonLexer(stripnl=False)))))


def versions_table(skill: dict) -> StyleAndTextTuples:
    """One line per kept version, oldest first; the current one marked ``*``."""
    current, versions = skill.get("version"), skill.get("versions") or []
    statuses = [v.get("status") or "?" for v in versions]
    return table([["*" if v.get("version") == current else " " for v in versions],
                  [f"v{v.get('version', '?')}" for v in versions],
                  [stamp(v.get("created_at"), "?") for v in versions],
                  [v.get("origin") or "?" for v in versions], statuses,
                  [v.get("model") or "model ?" for v in versions],
                  [clip(v.get("note") or "", NOTE_CHARS) for v in versions]],
                 {4: list(map(status_style, statuses))}, indent="    ")


def skill_view(skill: dict, *, module_path: str, source: str, test_path: str, tests: str | None,
               automatic_mark: str, dependents: Sequence[str]) -> StyleAndTextTuples:
    """``:show``: the skill's record (status, version, signature, evidence, imports, used by,
    versions), then its module and its tests, highlighted."""
    status = skill.get("status") or "?"
    out: StyleAndTextTuples = [(HEADING, skill.get("name") or "?"), ("", "  "), (status_style(status), status)]
    current, kept = skill.get("version"), len(skill.get("versions") or ())
    if current:
        out.append(("", f"  · version {current} of {kept}" if kept else f"  · version {current}"))
    out.append(("", "\n"))
    fields = [("signature", " ".join((skill.get("signature") or "-").split())),
              ("description", " ".join((skill.get("description") or "-").split())),
              ("evidence", describe_evidence(skill["evidence"]) if skill.get("evidence") else "not recorded"),
              ("sandbox", skill.get("sandbox_level") or "-"), ("last tested", stamp(skill.get("last_tested")))]
    if skill.get("dependencies"):
        fields.append(("imports", ", ".join(skill["dependencies"])))
    if dependents:
        fields.append(("used by", ", ".join(dependents)))
    out += table([[f"{label}:" for label, _ in fields], [value for _, value in fields]], indent="  ")
    if skill.get("versions"):
        out.append((HEADING, "  versions:\n"))
        out += versions_table(skill)
    out.append((HEADING, f"# {module_path}\n"))
    out += highlighted(source)
    written, _, automatic = (tests or "").partition(automatic_mark)
    out.append((HEADING, f"# {test_path}\n"))
    out += highlighted(written) if tests is not None else [("", "(no tests saved)\n")]
    if automatic:
        out.append((HEADING, "# + the automatic checks from the signature (property cases, types, repeats)\n"))
    return out


def plain(fragments: StyleAndTextTuples) -> str:
    """The text of ``fragments``, without styles: what a file or pipe receives."""
    return "".join(text for _, text, *_ in fragments)
