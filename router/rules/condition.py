"""Find the macro and list names a Falco condition refers to, without compiling it.

In Falco's grammar a bare word means one of three things, by position. Where an expression is expected it is
a macro (``spawned_process and ...``). After a comparison operator it is a literal value (``evt.type = execve``).
Inside the parentheses after ``in``/``intersects``/``pmatch`` it is a list if a list by that name exists, and
a literal otherwise. So an unknown macro can be detected, but an unknown list cannot: Falco reads it as a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_COMPARISONS = frozenset(
    {
        "=",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "contains",
        "icontains",
        "bcontains",
        "startswith",
        "bstartswith",
        "endswith",
        "glob",
        "iglob",
        "regex",
        "in",
        "intersects",
        "pmatch",
    }
)
_SET_OPERATORS = frozenset({"in", "intersects", "pmatch"})
_LOGICAL = frozenset({"and", "or", "not"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*(?:\[[^\]]*\])?")
_OPERATOR = re.compile(r"==|!=|<=|>=|=|<|>")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


@dataclass
class References:
    """Names a condition uses: ``macros`` must exist, ``list_candidates`` are lists if such lists exist."""

    macros: list[str] = field(default_factory=list)
    list_candidates: list[str] = field(default_factory=list)


def find_references(condition: str) -> References:
    """Return the macro names and the possible list names used in ``condition``."""
    scanner = _Scanner(condition)
    scanner.expression()
    return scanner.refs


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.refs = References()

    def _skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _peek(self) -> str:
        self._skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expression(self, closing: str = "") -> None:
        """Scan terms joined by and/or/not until ``closing`` (or the end)."""
        while True:
            char = self._peek()
            if not char or char == closing:
                if char:
                    self.pos += 1
                return
            if char == "(":
                self.pos += 1
                self.expression(")")
                continue
            word = _WORD.match(self.text, self.pos)
            if word is None:
                self.pos += 1  # a character Falco would reject; compile errors are falco -V's job
                continue
            self.pos = word.end()
            name = word.group()
            if name.lower() in _LOGICAL:
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "(":
                # A transformer such as tolower(proc.name) wraps a field.
                self._skip_group()
                self._after_field()
                continue
            if "." in name or self._next_is_comparison():
                self._after_field()
            elif _NAME.fullmatch(name):
                self.refs.macros.append(name)

    def _next_is_comparison(self) -> bool:
        self._skip_space()
        if _OPERATOR.match(self.text, self.pos):
            return True
        word = _WORD.match(self.text, self.pos)
        return word is not None and word.group().lower() in (_COMPARISONS | {"exists"})

    def _after_field(self) -> None:
        self._skip_space()
        operator = _OPERATOR.match(self.text, self.pos)
        if operator:
            self.pos = operator.end()
            self._value()
            return
        word = _WORD.match(self.text, self.pos)
        if word is None:
            return
        keyword = word.group().lower()
        if keyword == "exists":
            self.pos = word.end()
        elif keyword in _COMPARISONS:
            self.pos = word.end()
            if keyword in _SET_OPERATORS and self._peek() == "(":
                self._value_list()
            else:
                self._value()

    def _value(self) -> None:
        char = self._peek()
        if char in {'"', "'"}:
            self._skip_string(char)
            return
        if char == "(":
            self._value_list()
            return
        start = self.pos
        while self.pos < len(self.text) and not self.text[self.pos].isspace() and self.text[self.pos] not in "()":
            self.pos += 1
        if self.pos < len(self.text) and self.text[self.pos] == "(" and self.pos > start:
            self._skip_group()  # val(fd.name) and other transformers on the right-hand side

    def _value_list(self) -> None:
        self.pos += 1  # the opening parenthesis
        item_start = self.pos
        depth = 0
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in {'"', "'"}:
                self._skip_string(char)
                continue
            if char == "[":
                depth += 1
            elif char == "]":
                depth -= 1
            elif depth <= 0 and char in ",)":
                self._list_item(self.text[item_start : self.pos])
                self.pos += 1
                if char == ")":
                    return
                item_start = self.pos
                continue
            self.pos += 1

    def _list_item(self, item: str) -> None:
        item = item.strip()
        if _NAME.fullmatch(item):
            self.refs.list_candidates.append(item)

    def _skip_string(self, quote: str) -> None:
        self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos] != quote:
            self.pos += 2 if self.text[self.pos] == "\\" else 1
        self.pos += 1

    def _skip_group(self) -> None:
        depth = 0
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    return
