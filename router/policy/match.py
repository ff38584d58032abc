"""The match language shared by routes, allow-list entries, dedup and correlation rules.

An expression is YAML, compiled once at load into a closure ``Event -> bool``:

- a leaf ``{field: NAME, OP: VALUE}`` with exactly one operator: ``equals``, ``not_equals``, ``in``,
  ``not_in``, ``glob``, ``regex``, ``startswith``, ``contains``, ``exists``, or a numeric comparison
  ``">"``, ``">="``, ``"<"``, ``"<="``;
- the short form ``"FIELD OP VALUE"`` with OP one of ``==``, ``!=``, ``>``, ``>=``, ``<``, ``<=``
  (``"proc.tty == 34816"``);
- ``{priority: ">= warning"}`` (also ``"notice"``, ``"== notice"``, ``"< error"``);
- ``{all: [...]}``, ``{any: [...]}``, ``{not: EXPR}``; a bare list means ``all``.

Values are compared after canonicalisation, so the number 34816, the JSON string "34816" and the gRPC
string "34816" are equal, and JSON null equals the gRPC string "null". A list-valued field (``tags``,
``ka.user.groups``) matches when any element matches. An invalid expression raises ``MatchError``
with the key path inside the expression and the reason.
"""

from __future__ import annotations

import fnmatch
import math
import operator as op
import re
from collections.abc import Callable
from typing import Any, Final

from router.event import MISSING, Event
from router.priority import PRIORITY_NAMES, Priority, parse_priority

Matcher = Callable[[Event], bool]

_NULL: Final = "\x00null"
"""Canonical form of JSON null and of the string "null" the gRPC transport sends for it."""

_INT_TEXT: Final = re.compile(r"[+-]?\d+")
_FLOAT_TEXT: Final = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_SHORT_FORM: Final = re.compile(r"\s*(\S+)\s*(==|!=|>=|<=|>|<)\s*(.*?)\s*")
_PRIORITY_FORM: Final = re.compile(r"\s*(==|!=|>=|<=|>|<)?\s*([A-Za-z]+)\s*")

_STRING_OPS: Final = ("glob", "regex", "startswith", "contains")
_NUMERIC_OPS: Final = (">", ">=", "<", "<=")
_OPERATORS: Final = ("equals", "not_equals", "in", "not_in", *_STRING_OPS, "exists", *_NUMERIC_OPS)
_SHORT_OPS: Final = {"==": "equals", "!=": "not_equals"}
_COMPARE: Final = {">": op.gt, ">=": op.ge, "<": op.lt, "<=": op.le}


class MatchError(ValueError):
    """A match expression is invalid; ``path`` is the key path inside the expression."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


def canonical(value: Any) -> str | None:
    """Return the transport-independent form of a scalar field value, or None for a list or mapping.

    Integers and integral floats become their decimal text, which is what the gRPC transport sends for
    them, so 34816 and "34816" are equal. Other strings are kept as they are: reading "0123" or "1e5"
    as a number would make different container ids or names equal. Booleans become ``true``/``false``
    as gRPC writes them, and null (JSON null or the gRPC string ``"null"``) becomes a marker that no
    real string equals.
    """
    if isinstance(value, str):
        return _NULL if value == "null" else value
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    return None


def _float_text(number: float) -> str:
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return repr(number)


def as_number(value: Any) -> float | int | None:
    """Return a field value as a number whether it arrived as a number or as numeric text, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        if _INT_TEXT.fullmatch(value):
            return int(value)
        if _FLOAT_TEXT.fullmatch(value):
            return float(value)
    return None


def compile_match(spec: Any, path: str = "") -> Matcher:
    """Compile a match expression into a closure; raise ``MatchError`` when it is invalid."""
    if isinstance(spec, list):
        return _compile_all(spec, path)
    if isinstance(spec, str):
        return _compile_short(spec, path)
    if not isinstance(spec, dict):
        raise MatchError(path, f"expected a mapping, a list or a 'FIELD OP VALUE' string, got {type(spec).__name__}")
    if "field" in spec:
        return _compile_leaf(spec, path)
    if len(spec) != 1:
        raise MatchError(
            path, f"expected one of field, priority, all, any, not; got keys {', '.join(map(str, sorted(spec)))}"
        )
    ((key, value),) = spec.items()
    where = _join(path, key)
    if key == "all":
        return _compile_all(value, where)
    if key == "any":
        return _compile_any(value, where)
    if key == "not":
        inner = compile_match(value, where)
        return lambda event: not inner(event)
    if key == "priority":
        return _compile_priority(value, where)
    raise MatchError(path, f"unknown key {key!r}: expected one of field, priority, all, any, not")


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _compile_list(value: Any, path: str) -> list[Matcher]:
    if not isinstance(value, list) or not value:
        raise MatchError(path, "expected a non-empty list of expressions")
    return [compile_match(item, _join(path, index)) for index, item in enumerate(value)]


def _compile_all(value: Any, path: str) -> Matcher:
    parts = tuple(_compile_list(value, path))
    # Two and three parts are the common case; plain "and" avoids a generator per alert.
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        return lambda event: first(event) and second(event)
    if len(parts) == 3:
        first, second, third = parts
        return lambda event: first(event) and second(event) and third(event)
    return lambda event: all(part(event) for part in parts)


def _compile_any(value: Any, path: str) -> Matcher:
    parts = tuple(_compile_list(value, path))
    return lambda event: any(part(event) for part in parts)


def _compile_short(text: str, path: str) -> Matcher:
    matched = _SHORT_FORM.fullmatch(text)
    if matched is None:
        raise MatchError(path, f"{text!r} is not 'FIELD OP VALUE' with OP one of ==, !=, >, >=, <, <=")
    name, operator, value = matched.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return _compile_leaf({"field": name, _SHORT_OPS.get(operator, operator): value}, path)


def _compile_priority(value: Any, path: str, operator: str | None = None) -> Matcher:
    if not isinstance(value, str):
        raise MatchError(path, "expected a priority such as 'warning' or '>= warning'")
    matched = _PRIORITY_FORM.fullmatch(value)
    level = parse_priority(matched.group(2)) if matched else None
    if matched is None or level is None:
        names = ", ".join(PRIORITY_NAMES)
        raise MatchError(path, f"{value!r} is not a priority: expected [OP] NAME, NAME one of {names}")
    return _priority_matcher(operator or matched.group(1) or "==", level)


def _priority_matcher(operator: str, level: Priority) -> Matcher:
    # An unknown priority (a typo in a Falco rule) counts as more severe than any level, so it passes
    # ">=" and ">" and never satisfies "<", "<=" or "==": a typo must not lower an alert.
    if operator in (">=", ">"):
        strict = operator == ">"
        return lambda e: e.priority is None or (e.priority > level if strict else e.priority >= level)
    if operator in ("<=", "<"):
        strict = operator == "<"
        return lambda e: e.priority is not None and (e.priority < level if strict else e.priority <= level)
    if operator == "!=":
        return lambda e: e.priority != level
    return lambda e: e.priority == level


def _compile_leaf(spec: dict[str, Any], path: str) -> Matcher:
    name = spec["field"]
    if not isinstance(name, str) or not name:
        raise MatchError(_join(path, "field"), "expected a field name such as proc.cmdline")
    operators = [key for key in spec if key != "field"]
    unknown = [key for key in operators if key not in _OPERATORS]
    if unknown:
        raise MatchError(_join(path, unknown[0]), f"unknown operator: expected one of {', '.join(_OPERATORS)}")
    if len(operators) != 1:
        raise MatchError(path, f"a field condition takes exactly one operator, got {len(operators)}")
    operator = operators[0]
    where = _join(path, operator)
    value = spec[operator]

    if name == "priority" and operator in ("equals", "not_equals", *_NUMERIC_OPS):
        return _compile_priority(value, where, {"equals": "==", "not_equals": "!="}.get(operator, operator))
    if operator == "exists":
        if not isinstance(value, bool):
            raise MatchError(where, "expected true or false")
        return _exists(name, value)

    get = _getter(name)
    if operator == "equals" and (target := _scalar(value, where)) != _NULL:
        return _equals(get, target)
    test = _value_test(operator, value, where)
    negate = operator in ("not_equals", "not_in")

    def matches(event: Event) -> bool:
        found = get(event)
        if found is MISSING:
            return negate
        hit = any(test(item) for item in found) if isinstance(found, list) else test(found)
        return not hit if negate else hit

    return matches


_TOP_LEVEL: Final = frozenset(("rule", "priority", "source", "hostname", "tags", "output"))


def _getter(name: str) -> Callable[[Event], Any]:
    # Same lookup as Event.get_field, with the branch chosen once here instead of on every alert.
    if name in _TOP_LEVEL or name.startswith("enrichment."):
        return lambda event: event.get_field(name)
    return lambda event: event.output_fields.get(name, MISSING)


def _equals(get: Callable[[Event], Any], target: str) -> Matcher:
    # The common case, kept short: a string value is its own canonical form unless it is "null",
    # which cannot equal a non-null target.
    def matches(event: Event) -> bool:
        found = get(event)
        if found.__class__ is str:
            return bool(found == target)
        if found is MISSING:
            return False
        if isinstance(found, list):
            return any(canonical(item) == target for item in found)
        return canonical(found) == target

    return matches


def _exists(name: str, expected: bool) -> Matcher:
    # Falco writes null for a field it could not resolve, so a null counts as absent.
    def matches(event: Event) -> bool:
        found = event.get_field(name)
        present = found is not MISSING and found is not None and found != "null"
        return present is expected

    return matches


def _value_test(operator: str, value: Any, path: str) -> Callable[[Any], bool]:
    if operator in ("equals", "not_equals"):
        target = _scalar(value, path)
        return lambda found: canonical(found) == target
    if operator in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise MatchError(path, "expected a non-empty list of values")
        targets = frozenset(_scalar(item, _join(path, index)) for index, item in enumerate(value))
        return lambda found: canonical(found) in targets
    if operator in _NUMERIC_OPS:
        return _numeric_test(operator, value, path)
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise MatchError(path, "expected a string")
    text = str(value)
    if operator == "glob":
        pattern = re.compile(fnmatch.translate(text), re.DOTALL)
        return lambda found: (s := _text(found)) is not None and pattern.match(s) is not None
    if operator == "regex":
        try:
            regex = re.compile(text)
        except re.error as exc:
            raise MatchError(path, f"invalid regular expression {text!r}: {exc}") from exc
        return lambda found: (s := _text(found)) is not None and regex.search(s) is not None
    if operator == "startswith":
        return lambda found: (s := _text(found)) is not None and s.startswith(text)
    return lambda found: (s := _text(found)) is not None and text in s


def _numeric_test(operator: str, value: Any, path: str) -> Callable[[Any], bool]:
    bound = as_number(value)
    if bound is None:
        raise MatchError(path, f"expected a number, got {value!r}")
    compare = _COMPARE[operator]

    def test(found: Any) -> bool:
        number = as_number(found)
        return number is not None and compare(number, bound)

    return test


def _scalar(value: Any, path: str) -> str:
    form = canonical(value)
    if form is None:
        raise MatchError(path, f"expected a string, number, boolean or null, got {type(value).__name__}")
    return form


def _text(found: Any) -> str | None:
    # String operators see a number as its decimal text and never match null.
    if isinstance(found, str):
        return None if found == "null" else found
    if found is None or isinstance(found, dict | list):
        return None
    return canonical(found)
