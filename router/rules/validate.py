"""Validate Falco rules files against the rules-file schema, without Falco.

The checks follow the rules-file format of Falco 0.43. Each file is a YAML sequence whose items start with
one of ``rule``, ``macro``, ``list``, ``required_engine_version`` or ``required_plugin_versions``. ``append``
(deprecated since 0.37) and ``override`` (0.37+) change an earlier definition and cannot be combined. An
appended or overridden name must already be defined by a file loaded earlier.

Files Falco loads before the candidates (its default ``falco_rules.yaml`` and the like) are "base files".
Their macros, lists and rules count as defined. Without base files the validator cannot know what Falco
already defines, so a reference it cannot resolve is a warning, not an error: real custom rules files use
default macros such as ``spawned_process`` and must not be rejected for it. With base files every name must
resolve, and an unresolved one is an error.

Scalars are read as the text written in the file, as Falco's YAML library does, so ``yes`` stays a string
where a string is expected instead of becoming a YAML 1.1 boolean.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import yaml

from router.priority import PRIORITY_NAMES, parse_priority
from router.rules.condition import find_references

Severity = Literal["error", "warning"]
_Keys = dict[str, tuple[yaml.Node, yaml.Node]]

_KINDS = ("rule", "macro", "list", "required_engine_version", "required_plugin_versions")
_RULE_KEYS = frozenset(
    {
        "rule",
        "desc",
        "condition",
        "output",
        "priority",
        "enabled",
        "tags",
        "source",
        "exceptions",
        "warn_evttypes",
        "skip-if-unknown-filter",
        "capture",
        "capture_duration",
        "append",
        "override",
    }
)
_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "rule": _RULE_KEYS,
    "macro": frozenset({"macro", "condition", "append", "override"}),
    "list": frozenset({"list", "items", "append", "override"}),
    "required_engine_version": frozenset({"required_engine_version"}),
    "required_plugin_versions": frozenset({"required_plugin_versions"}),
}
_RULE_APPENDABLE = frozenset({"condition", "output", "desc", "tags", "exceptions"})
_OVERRIDABLE: dict[str, dict[str, frozenset[str]]] = {
    "rule": {
        "append": _RULE_APPENDABLE,
        "replace": _RULE_APPENDABLE
        | {"priority", "enabled", "capture", "capture_duration", "warn_evttypes", "skip-if-unknown-filter"},
    },
    "macro": {"append": frozenset({"condition"}), "replace": frozenset({"condition"})},
    "list": {"append": frozenset({"items"}), "replace": frozenset({"items"})},
}
_RULE_REQUIRED = ("condition", "output", "desc", "priority")
_BOOLEAN_KEYS = frozenset({"enabled", "warn_evttypes", "skip-if-unknown-filter", "capture", "append"})
_TEXT_KEYS = frozenset({"desc", "condition", "output", "source"})
_EXCEPTION_KEYS = frozenset({"name", "fields", "comps", "values"})
_BOOLEANS = frozenset({"true", "false", "yes", "no", "on", "off", "y", "n"})
_SEMVER = re.compile(r"\d+\.\d+\.\d+")
_INTEGER = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One problem in a rules file, with the line it is on (1-based) when known."""

    file: str
    line: int | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}"


@dataclass(frozen=True, slots=True)
class RulesFile:
    """A rules file's name (as shown in problems) and its text."""

    name: str
    text: str


@dataclass
class _Names:
    rules: set[str] = field(default_factory=set)
    macros: set[str] = field(default_factory=set)
    lists: set[str] = field(default_factory=set)

    def of(self, kind: str) -> set[str]:
        return {"rule": self.rules, "macro": self.macros, "list": self.lists}[kind]


@dataclass
class _Condition:
    file: str
    line: int
    owner: str
    text: str
    in_base: bool


def validate_rules(candidates: Sequence[RulesFile], base: Sequence[RulesFile] = ()) -> list[RuleProblem]:
    """Validate ``candidates`` in load order, after ``base``; return every problem found.

    Problems inside base files are reported as warnings: those files are what Falco already runs, and the
    rollout of the candidates must not fail on a check this validator gets wrong for them.
    """
    checker = _Checker(strict_references=bool(base))
    for rules_file in base:
        checker.check_file(rules_file, in_base=True)
    for rules_file in candidates:
        checker.check_file(rules_file, in_base=False)
    checker.check_references()
    return checker.problems


def has_errors(problems: Sequence[RuleProblem]) -> bool:
    """Tell whether any problem is an error (warnings alone do not stop a rollout)."""
    return any(p.severity == "error" for p in problems)


class _Checker:
    def __init__(self, *, strict_references: bool) -> None:
        self.strict = strict_references
        self.names = _Names()
        self.conditions: list[_Condition] = []
        self.problems: list[RuleProblem] = []
        self._file = ""
        self._in_base = False

    def _add(self, where: yaml.Node | int | None, message: str, severity: Severity = "error") -> None:
        if self._in_base:
            severity = "warning"
        line = where.start_mark.line + 1 if isinstance(where, yaml.Node) else where
        self.problems.append(RuleProblem(self._file, line, message, severity))

    def _unresolved(self, where: yaml.Node | int, message: str) -> None:
        if self.strict:
            self._add(where, message)
        else:
            self._add(
                where, f"{message} (no base_files configured, so it may come from a file Falco loads first)", "warning"
            )

    def check_file(self, rules_file: RulesFile, *, in_base: bool) -> None:
        self._file = rules_file.name
        self._in_base = in_base
        try:
            documents = list(yaml.compose_all(rules_file.text, Loader=yaml.SafeLoader))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            reason = getattr(exc, "problem", None) or str(exc)
            line = mark.line + 1 if mark is not None else None
            self.problems.append(
                RuleProblem(rules_file.name, line, f"invalid YAML: {reason}", "warning" if in_base else "error")
            )
            return
        for document in documents:
            if document is None or (isinstance(document, yaml.ScalarNode) and document.value == ""):
                continue
            if not isinstance(document, yaml.SequenceNode):
                self._add(
                    document,
                    "a rules file must be a YAML sequence of items (each starting with '- rule:', '- macro:' ...)",
                )
                continue
            for item in document.value:
                self._check_item(item)

    def _check_item(self, item: yaml.Node) -> None:
        if not isinstance(item, yaml.MappingNode):
            self._add(item, f"each item must be a mapping starting with one of: {', '.join(_KINDS)}")
            return
        keys = _mapping(item)
        seen: set[str] = set()
        for key_node, _value in item.value:
            if str(key_node.value) in seen:
                # Only one of the two values takes effect, which is rarely what the author meant.
                self._add(key_node, f"key {key_node.value!r} appears twice in this item; remove one", "warning")
            seen.add(str(key_node.value))
        kinds = [k for k in _KINDS if k in keys]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none of them"
            self._add(item, f"an item must have exactly one of {', '.join(_KINDS)}; found {found}")
            return
        kind = kinds[0]
        for key, (key_node, _value) in keys.items():
            if key not in _ALLOWED_KEYS[kind]:
                allowed = ", ".join(sorted(_ALLOWED_KEYS[kind] - {kind}))
                self._add(key_node, f"unknown key {key!r} in a {kind} item; allowed keys: {allowed}")
        if kind == "required_engine_version":
            self._check_engine_version(keys[kind][1])
        elif kind == "required_plugin_versions":
            self._check_plugin_versions(keys[kind][1])
        else:
            self._check_definition(kind, item, keys)

    def _check_engine_version(self, value: yaml.Node) -> None:
        text = _text(value)
        if text is None or not (_INTEGER.fullmatch(text) or _SEMVER.fullmatch(text)):
            self._add(value, "required_engine_version must be an integer (15) or a semantic version string (0.31.0)")

    def _check_plugin_versions(self, value: yaml.Node) -> None:
        if not isinstance(value, yaml.SequenceNode):
            self._add(value, "required_plugin_versions must be a list of {name, version, alternatives}")
            return
        for entry in value.value:
            self._check_plugin_entry(entry, allow_alternatives=True)

    def _check_plugin_entry(self, entry: yaml.Node, *, allow_alternatives: bool) -> None:
        if not isinstance(entry, yaml.MappingNode):
            self._add(entry, "a plugin requirement must be a mapping with name and version")
            return
        keys = _mapping(entry)
        allowed = {"name", "version", "alternatives"} if allow_alternatives else {"name", "version"}
        for key, (key_node, _value) in keys.items():
            if key not in allowed:
                self._add(
                    key_node, f"unknown key {key!r} in a plugin requirement; allowed keys: {', '.join(sorted(allowed))}"
                )
        for key in ("name", "version"):
            if key not in keys:
                self._add(entry, f"a plugin requirement needs {key!r}")
        if "version" in keys:
            version = _text(keys["version"][1])
            if version is None or not _SEMVER.fullmatch(version):
                self._add(keys["version"][1], "a plugin version must be a semantic version string such as 0.10.0")
        if "alternatives" in keys:
            alternatives = keys["alternatives"][1]
            if not isinstance(alternatives, yaml.SequenceNode):
                self._add(alternatives, "alternatives must be a list of {name, version}")
                return
            for alternative in alternatives.value:
                self._check_plugin_entry(alternative, allow_alternatives=False)

    def _check_definition(self, kind: str, item: yaml.MappingNode, keys: _Keys) -> None:
        name_node = keys[kind][1]
        name = _text(name_node)
        if not name:
            self._add(name_node, f"the {kind} name must be a non-empty string")
            return
        for key, (_key_node, value) in keys.items():
            if key in _ALLOWED_KEYS[kind] and key != kind:
                self._check_value(kind, key, value)

        appends = "append" in keys and (_text(keys["append"][1]) or "").lower() in {"true", "yes", "on", "y"}
        overrides = keys["override"][1] if "override" in keys else None
        known = name in self.names.of(kind)
        if appends and overrides is not None:
            self._add(
                keys["append"][0], f"{kind} {name!r} uses both append and override; remove append and keep override"
            )
            return
        if appends:
            self._check_append(kind, name, item, keys, known=known)
        elif overrides is not None:
            self._check_override(kind, name, overrides, keys, known=known)
        else:
            self._check_new(kind, name, item, keys, known=known)
        self.names.of(kind).add(name)
        condition = _text(keys["condition"][1]) if "condition" in keys else None
        if condition:
            line = keys["condition"][1].start_mark.line + 1
            self.conditions.append(_Condition(self._file, line, f"{kind} {name!r}", condition, self._in_base))

    def _check_value(self, kind: str, key: str, value: yaml.Node) -> None:
        text = _text(value)
        if key in _BOOLEAN_KEYS:
            if text is None or text.lower() not in _BOOLEANS:
                self._add(value, f"{key} must be true or false")
        elif key in _TEXT_KEYS:
            if text is None:
                self._add(value, f"{key} must be a string")
            elif key in {"condition", "source"} and not text.strip():
                self._add(value, f"{key} must not be empty")
        elif key == "priority":
            if text is None or parse_priority(text) is None:
                shown = repr(text) if text is not None else "a non-scalar value"
                self._add(value, f"unknown priority {shown}: expected one of {', '.join(PRIORITY_NAMES)} (any case)")
        elif key == "capture_duration":
            if text is None or not _INTEGER.fullmatch(text):
                self._add(value, "capture_duration must be a whole number of milliseconds")
        elif key in {"tags", "items"}:
            if not isinstance(value, yaml.SequenceNode) or not all(isinstance(v, yaml.ScalarNode) for v in value.value):
                self._add(value, f"{key} must be a list of strings{' or numbers' if key == 'items' else ''}")
        elif key == "exceptions":
            self._check_exceptions(value)
        elif key == "override" and not isinstance(value, yaml.MappingNode):
            self._add(value, "override must map each property to append or replace, such as {condition: append}")

    def _check_exceptions(self, value: yaml.Node) -> None:
        if not isinstance(value, yaml.SequenceNode):
            self._add(value, "exceptions must be a list of {name, fields, comps, values}")
            return
        for entry in value.value:
            if not isinstance(entry, yaml.MappingNode):
                self._add(entry, "an exception must be a mapping with name, fields, comps and values")
                continue
            keys = _mapping(entry)
            for key, (key_node, _value) in keys.items():
                if key not in _EXCEPTION_KEYS:
                    self._add(
                        key_node, f"unknown key {key!r} in an exception; allowed keys: comps, fields, name, values"
                    )
            name = _text(keys["name"][1]) if "name" in keys else None
            if not name:
                self._add(entry, "an exception needs a non-empty name")
            fields = keys.get("fields", (None, None))[1]
            comps = keys.get("comps", (None, None))[1]
            for label, node in (("fields", fields), ("comps", comps)):
                if node is not None and not isinstance(node, yaml.ScalarNode | yaml.SequenceNode):
                    self._add(node, f"exception {label} must be a string or a list of strings")
            if (
                isinstance(fields, yaml.SequenceNode)
                and isinstance(comps, yaml.SequenceNode)
                and len(fields.value) != len(comps.value)
            ):
                self._add(
                    comps,
                    f"exception comps has {len(comps.value)} entries but fields has {len(fields.value)}; "
                    "each field needs one comparison",
                )
            values = keys.get("values", (None, None))[1]
            if values is not None and not isinstance(values, yaml.SequenceNode):
                self._add(values, "exception values must be a list")

    def _check_append(self, kind: str, name: str, item: yaml.Node, keys: _Keys, *, known: bool) -> None:
        append_key = keys["append"][0]
        self._add(
            append_key,
            "'append' is deprecated since Falco 0.37; use override, such as override: {condition: append}",
            "warning",
        )
        needed = {"rule": ("condition", "exceptions"), "macro": ("condition",), "list": ("items",)}[kind]
        if not any(key in keys for key in needed):
            hint = (
                " (to switch a rule on or off, use enabled with override: {enabled: replace})" if kind == "rule" else ""
            )
            self._add(item, f"appended {kind} {name!r} must have {' or '.join(needed)}{hint}")
        if not known:
            self._unresolved(item, f"{kind} {name!r} uses append but no {kind} by that name is defined before it")

    def _check_override(self, kind: str, name: str, overrides: yaml.Node, keys: _Keys, *, known: bool) -> None:
        if not isinstance(overrides, yaml.MappingNode):
            return  # already reported by _check_value
        listed = _mapping(overrides)
        for prop, (prop_node, mode_node) in listed.items():
            mode = _text(mode_node)
            if mode not in {"append", "replace"}:
                self._add(mode_node, f"override of {prop!r} must be append or replace, got {mode!r}")
                continue
            allowed = _OVERRIDABLE[kind][mode]
            if prop not in allowed:
                self._add(
                    prop_node,
                    f"{kind} property {prop!r} cannot be overridden with {mode}; allowed: {', '.join(sorted(allowed))}",
                )
            if prop not in keys:
                self._add(prop_node, f"override lists {prop!r} but the {kind} item has no {prop!r} key")
        for prop, (prop_node, _value) in keys.items():
            if prop not in {kind, "override"} and prop not in listed and prop in _ALLOWED_KEYS[kind]:
                self._add(prop_node, f"key {prop!r} has no entry under override; add {prop}: append or {prop}: replace")
        if not known:
            self._unresolved(
                keys["override"][0], f"{kind} {name!r} uses override but no {kind} by that name is defined before it"
            )

    def _check_new(self, kind: str, name: str, item: yaml.Node, keys: _Keys, *, known: bool) -> None:
        if kind == "rule" and set(keys) == {"rule", "enabled"}:
            # Switching an existing rule on or off without override still works but is deprecated.
            self._add(
                keys["enabled"][0],
                "enabled without override is deprecated; add override: {enabled: replace}",
                "warning",
            )
            if not known:
                self._unresolved(item, f"rule {name!r} sets enabled but no rule by that name is defined before it")
            return
        required = {"rule": _RULE_REQUIRED, "macro": ("condition",), "list": ("items",)}[kind]
        missing = [key for key in required if key not in keys]
        if missing:
            self._add(
                item,
                f"{kind} {name!r} is missing {', '.join(missing)} "
                f"(required for a new {kind}; to change an existing one use override)",
            )

    def check_references(self) -> None:
        for condition in self.conditions:
            self._file = condition.file
            self._in_base = condition.in_base
            for macro in dict.fromkeys(find_references(condition.text).macros):
                if macro in self.names.macros:
                    continue
                hint = f" ({macro!r} is a list; use it inside in (...))" if macro in self.names.lists else ""
                message = f"{condition.owner} refers to macro {macro!r}, which is not defined{hint}"
                self._unresolved(condition.line, message)


def _mapping(node: yaml.MappingNode) -> _Keys:
    return {str(key.value): (key, value) for key, value in node.value}


def _text(node: yaml.Node | None) -> str | None:
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    return None
