"""Gate query templates: where each ``${name}`` stands in the PromQL, and its safe value.

A value is escaped for the lexical context it stands in, found by a small PromQL scan:

- inside a double-quoted string: escaped as a PromQL string (``a"b`` -> ``a\\"b``);
- inside a double-quoted regex matcher (``=~"..."``, ``!~"..."``): its regex
  metacharacters are escaped too, so ``a.b`` matches only ``a.b``;
- bare PromQL, for the numeric variables (``${step}``, ``${percent}``): the value must
  be a number.

Anywhere else (single-quoted or backtick strings, comments, a text variable standing
bare) no escaping is safe: the plan is refused at apply (``template_problems``).
``$$`` is a literal ``$``; a ``$`` followed by anything else stays as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum

from stages.fields import text
from stages.problems import Path, Report

NUMERIC_VARIABLES = frozenset({"step", "percent"})
# Bare durations, for range selectors: ``increase(x[${step_window}])`` counts since the
# current step began (what a compare gate reads).
DURATION_VARIABLES = frozenset({"step_window"})
_DURATION = re.compile(r"[1-9]\d*s")


class QueryTemplateError(ValueError):
    """A gate query template that cannot be rendered; the message names the problem."""


class Context(Enum):
    STRING = "a double-quoted string"
    REGEX = "a double-quoted regex matcher"
    BARE = "bare PromQL"
    SINGLE = "a single-quoted string"
    BACKTICK = "a backtick string"
    COMMENT = "a comment"


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    context: Context
    line: int  # 1-based, within the template
    column: int  # 1-based


# --- escaping ------------------------------------------------------------------------------

# Go string escapes, which PromQL uses. Other control characters become \xNN, which Go
# reads as one byte: the same character, since they are all ASCII. PromQL's lexer takes
# a literal U+FFFD for broken UTF-8 and rejects the query, so it goes escaped too.
_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\ufffd": "\\ufffd",
}
# Go's regexp.QuoteMeta set: what RE2 reads as syntax.
_REGEX_META = frozenset("\\.+*?()|[]{}^$")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def escape_label_value(value: str) -> str:
    """``value`` as the inside of a PromQL double-quoted string (quotes not included)."""
    return "".join(_escape_char(ch) for ch in value)


def escape_regex_value(value: str) -> str:
    """``value`` as a literal inside a double-quoted RE2 regex (quotes not included)."""
    quoted = "".join(f"\\{ch}" if ch in _REGEX_META else ch for ch in value)
    return escape_label_value(quoted)


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:
        # A lone surrogate has no UTF-8 form, so no PromQL string can hold it.
        raise QueryTemplateError(f"value holds a lone surrogate U+{code:04X}")
    return ch


def _value_for(placeholder: Placeholder, value: str) -> str:
    name, context = placeholder.name, placeholder.context
    if context is Context.STRING:
        return escape_label_value(value)
    if context is Context.REGEX:
        return escape_regex_value(value)
    if context is Context.BARE and name in NUMERIC_VARIABLES:
        if not _NUMBER.fullmatch(value):
            raise QueryTemplateError(f"${{{name}}} stands bare, so it must be a number")
        return value
    if context is Context.BARE and name in DURATION_VARIABLES:
        if not _DURATION.fullmatch(value):
            raise QueryTemplateError(f"${{{name}}} stands bare, so it must be a duration")
        return value
    raise QueryTemplateError(_misplaced(placeholder))


# --- rendering -----------------------------------------------------------------------------


def render_query(template: str, variables: Mapping[str, str]) -> str:
    """Substitute each ``${name}`` with its value, escaped for where it stands."""
    out: list[str] = []
    for piece in _scan(template):
        if isinstance(piece, str):
            out.append(piece)
            continue
        if piece.name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise QueryTemplateError(f"unknown variable ${{{piece.name}}} (known: {known})")
        out.append(_value_for(piece, str(variables[piece.name])))
    return "".join(out)


def placeholders(template: str) -> list[Placeholder]:
    """Every placeholder of ``template`` with where it stands; raises on a malformed one."""
    return [piece for piece in _scan(template) if isinstance(piece, Placeholder)]


def template_problems(template: str) -> list[str]:
    """What makes ``template`` unsafe or unusable, for a person; empty when it is fine."""
    try:
        found = placeholders(template)
    except QueryTemplateError as exc:
        return [str(exc)]
    multiline = "\n" in template
    problems = []
    for p in found:
        if _allowed(p):
            continue
        where = f" (template line {p.line}, column {p.column})" if multiline else ""
        problems.append(_misplaced(p) + where)
    return problems


def query_template(report: Report, path: Path, value: object) -> str | None:
    """A plan field holding a query template: text whose placeholders stand where they
    can be escaped (a field reader, as in ``stages.fields``)."""
    template = text(report, path, value)
    if template is not None:
        for problem in template_problems(template):
            report.add(path, problem)
    return template


def _allowed(p: Placeholder) -> bool:
    if p.context in (Context.STRING, Context.REGEX):
        return True
    return p.context is Context.BARE and p.name in NUMERIC_VARIABLES | DURATION_VARIABLES


def _misplaced(p: Placeholder) -> str:
    if p.context is Context.BARE:
        return (
            f"${{{p.name}}} stands outside any string; write it inside double quotes, "
            'e.g. {rollout="${rollout}"}'
        )
    if p.context is Context.COMMENT:
        return f"${{{p.name}}} stands in a comment; remove it"
    return f"${{{p.name}}} stands in {p.context.value}; write it inside double quotes"


# --- the scan ------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REGEX_OPERATOR = re.compile(r"[=!]~\s*\Z")


class _Scanner:
    """Walks a template the way PromQL's lexer would, noting where each ``$`` falls."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.i = 0
        self.literal: list[str] = []
        self.code: list[str] = []  # PromQL outside strings and comments, for look-behind

    def pieces(self) -> Iterator[str | Placeholder]:
        context = Context.BARE
        quote = ""
        while self.i < len(self.template):
            ch = self.template[self.i]
            if ch == "$":
                yield from self._dollar(context)
                continue
            self.literal.append(ch)
            self.i += 1
            if context is Context.BARE:
                context, quote = self._after_code(ch)
            elif context is Context.COMMENT:
                if ch == "\n":
                    context = Context.BARE
            elif ch == "\\" and context is not Context.BACKTICK:
                self._copy_escaped()
            elif ch == quote:
                context, quote = Context.BARE, ""
        if self.literal:
            yield "".join(self.literal)

    def _after_code(self, ch: str) -> tuple[Context, str]:
        if ch == "#":
            return Context.COMMENT, ""
        if ch == '"':
            regex = _REGEX_OPERATOR.search("".join(self.code)) is not None
            self.code.append(ch)
            return (Context.REGEX if regex else Context.STRING), ch
        self.code.append(ch)
        if ch == "'":
            return Context.SINGLE, ch
        if ch == "`":
            return Context.BACKTICK, ch
        return Context.BARE, ""

    def _copy_escaped(self) -> None:
        # The escaped character never ends the string. "\${x}" stays as written (PromQL
        # rejects "\$"): a value after a backslash could turn the backslash into "\\"
        # and close the string.
        if self.i < len(self.template):
            self.literal.append(self.template[self.i])
            self.i += 1

    def _dollar(self, context: Context) -> Iterator[str | Placeholder]:
        rest = self.template[self.i + 1 :]
        if rest.startswith("$"):
            self.literal.append("$")
            self.i += 2
            return
        if not rest.startswith("{"):
            self.literal.append("$")
            self.i += 1
            return
        end = rest.find("}")
        if end < 0:
            raise QueryTemplateError(f"unterminated placeholder at offset {self.i}")
        name = rest[1:end]
        if not _NAME.fullmatch(name):
            raise QueryTemplateError(f"invalid placeholder ${{{name}}}")
        line = self.template.count("\n", 0, self.i) + 1
        column = self.i - (self.template.rfind("\n", 0, self.i) + 1) + 1
        if self.literal:
            yield "".join(self.literal)
            self.literal = []
        yield Placeholder(name, context, line, column)
        if context is Context.BARE:
            self.code.append("0")  # stands for a value: ends any "=~" before it
        self.i += end + 2


def _scan(template: str) -> Iterator[str | Placeholder]:
    return _Scanner(template).pieces()


__all__ = [
    "DURATION_VARIABLES",
    "NUMERIC_VARIABLES",
    "Context",
    "Placeholder",
    "QueryTemplateError",
    "escape_label_value",
    "escape_regex_value",
    "placeholders",
    "query_template",
    "render_query",
    "template_problems",
]
