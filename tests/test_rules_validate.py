"""The rules-file validator, on the real corpus files and on one broken file per kind of mistake."""

from __future__ import annotations

import pytest

from router.rules.condition import find_references
from router.rules.validate import RuleProblem, RulesFile, has_errors, validate_rules
from tests.support.data import CORPUS

VALID_CORPUS = sorted(CORPUS.glob("rules_*.yaml"))
VALID_CORPUS = [p for p in VALID_CORPUS if "invalid" not in p.name]

BASE = RulesFile(
    "falco_rules.yaml",
    """\
- macro: spawned_process
  condition: (evt.type in (execve, execveat) and evt.dir=<)
- macro: outbound
  condition: (evt.type = connect and evt.dir=< and fd.typechar = 4)
- list: shell_binaries
  items: [bash, sh]
- rule: Disallowed SSH Connection
  desc: Detect any new ssh connection to a host
  condition: outbound and fd.sport = 22
  output: Disallowed SSH Connection (command=%proc.cmdline)
  priority: NOTICE
  enabled: false
""",
)


def errors(problems: list[RuleProblem]) -> list[RuleProblem]:
    return [p for p in problems if p.severity == "error"]


def check(text: str, base: tuple[RulesFile, ...] = ()) -> list[RuleProblem]:
    return validate_rules([RulesFile("custom.yaml", text)], base)


@pytest.mark.parametrize("path", VALID_CORPUS, ids=lambda p: p.name)
def test_corpus_rules_file_has_no_errors(path):  # type: ignore[no-untyped-def]
    problems = validate_rules([RulesFile(path.name, path.read_text(encoding="utf-8"))])
    assert errors(problems) == []


def test_corpus_files_together_have_no_errors():
    files = [RulesFile(p.name, p.read_text(encoding="utf-8")) for p in VALID_CORPUS]
    assert errors(validate_rules(files)) == []


def test_unknown_default_macro_is_warning_without_base():
    problems = check((CORPUS / "rules_miner_blog.yaml").read_text(encoding="utf-8"))
    unresolved = [p for p in problems if "spawned_process" in p.message]
    assert [p.severity for p in unresolved] == ["warning"]


def test_unknown_macro_is_error_with_base():
    problems = check("- macro: mine\n  condition: proc.name = x and not_defined_anywhere\n", (BASE,))
    assert [(p.line, p.severity) for p in problems] == [(2, "error")]
    assert "not_defined_anywhere" in problems[0].message


def test_default_macro_resolves_from_base():
    problems = check((CORPUS / "rules_miner_blog.yaml").read_text(encoding="utf-8"), (BASE,))
    assert problems == []


def test_append_with_only_enabled_is_rejected():
    problems = check((CORPUS / "rules_invalid_append_enabled.yaml").read_text(encoding="utf-8"), (BASE,))
    found = errors(problems)
    assert [p.line for p in found] == [1]
    assert "must have condition or exceptions" in found[0].message


def test_append_to_undefined_rule_is_error_with_base():
    problems = check("- rule: Nowhere\n  append: true\n  condition: and proc.name = x\n", (BASE,))
    assert any("no rule by that name is defined" in p.message for p in errors(problems))


def test_append_to_undefined_rule_is_warning_without_base():
    problems = check("- rule: Nowhere\n  append: true\n  condition: and proc.name = x\n")
    assert errors(problems) == []


def test_override_enabled_replace_is_valid():
    text = "- rule: Disallowed SSH Connection\n  enabled: true\n  override:\n    enabled: replace\n"
    assert check(text, (BASE,)) == []


def test_yaml_syntax_error_reports_line():
    problems = check("- rule: a\n  desc: x\n  condition: [unclosed\n- rule: b\n")
    assert len(problems) == 1
    assert problems[0].line == 4
    assert problems[0].message.startswith("invalid YAML")


def test_unknown_key_is_rejected_with_line():
    text = (CORPUS / "rules_lab_usrlocalbin.yaml").read_text(encoding="utf-8").replace("  tags:", "  tagz:")
    found = errors(check(text))
    assert [p.line for p in found] == [17]
    assert "unknown key 'tagz'" in found[0].message


def test_bad_priority_is_rejected():
    text = (CORPUS / "rules_lab_usrlocalbin.yaml").read_text(encoding="utf-8").replace("WARNING", "URGENT")
    found = errors(check(text))
    assert [p.line for p in found] == [16]
    assert "unknown priority 'URGENT'" in found[0].message


@pytest.mark.parametrize("spelling", ["warning", "WARNING", "Informational", "info", "INFO", "debug"])
def test_priority_spelling_is_case_insensitive(spelling):  # type: ignore[no-untyped-def]
    text = f"- rule: r\n  desc: d\n  condition: proc.name = x\n  output: o\n  priority: {spelling}\n"
    assert check(text) == []


def test_append_with_override_is_rejected():
    text = (
        "- macro: spawned_process\n  condition: or proc.name = x\n  append: true\n  override:\n    condition: append\n"
    )
    found = errors(check(text, (BASE,)))
    assert [p.line for p in found] == [3]
    assert "both append and override" in found[0].message


def test_override_of_non_overridable_key_is_rejected():
    text = "- macro: spawned_process\n  condition: x\n  override:\n    priority: replace\n"
    assert any("cannot be overridden" in p.message for p in errors(check(text, (BASE,))))


def test_priority_cannot_be_appended():
    text = "- rule: Disallowed SSH Connection\n  priority: ERROR\n  override:\n    priority: append\n"
    found = errors(check(text, (BASE,)))
    assert [p.line for p in found] == [4]


def test_property_without_override_entry_is_rejected():
    text = "- rule: Disallowed SSH Connection\n  enabled: true\n  priority: ERROR\n  override:\n    enabled: replace\n"
    found = errors(check(text, (BASE,)))
    assert [p.line for p in found] == [3]
    assert "no entry under override" in found[0].message


def test_new_rule_without_output_is_rejected():
    found = errors(check("- rule: r\n  desc: d\n  condition: proc.name = x\n  priority: INFO\n"))
    assert "missing output" in found[0].message


@pytest.mark.parametrize("version", ["15", "0.31.0", "'0.31.0'"])
def test_required_engine_version_forms_accepted(version):  # type: ignore[no-untyped-def]
    assert check(f"- required_engine_version: {version}\n") == []


def test_required_engine_version_rejects_text():
    assert has_errors(check("- required_engine_version: latest\n"))


def test_required_plugin_versions_accepts_alternatives():
    text = (
        "- required_plugin_versions:\n"
        "  - name: k8saudit\n    version: 0.7.0\n"
        "    alternatives:\n    - name: k8saudit-eks\n      version: 0.4.0\n"
    )
    assert check(text) == []


def test_required_plugin_version_must_be_semver():
    assert has_errors(check("- required_plugin_versions:\n  - name: json\n    version: latest\n"))


def test_exceptions_fields_and_comps_pair_up():
    text = (
        "- rule: r\n  desc: d\n  condition: proc.name = x\n  output: o\n  priority: INFO\n"
        "  exceptions:\n  - name: e\n    fields: [proc.name, fd.name]\n    comps: [in]\n"
    )
    found = errors(check(text))
    assert [p.line for p in found] == [9]


def test_items_yes_stays_a_string():
    assert check("- list: answers\n  items: [yes, no, 3333]\n") == []


def test_problem_renders_file_and_line():
    assert str(RuleProblem("rules.d/a.yaml", 3, "bad")) == "rules.d/a.yaml:3: bad"


def test_condition_values_are_not_macros():
    refs = find_references("evt.type = execve and evt.dir=< and (container.id != host) and fd.sport in (miner_ports)")
    assert refs.macros == []


def test_condition_bare_words_are_macros():
    refs = find_references("spawned_process and not (shell_procs or tolower(proc.name) = x)")
    assert refs.macros == ["spawned_process", "shell_procs"]


def test_condition_list_names_inside_in():
    refs = find_references("proc.name in (shell_binaries, 'a b', runc:[0:PARENT])")
    assert refs.list_candidates == ["shell_binaries"]


def test_duplicate_key_is_warning_with_line():
    problems = check("- list: l\n  items: [a]\n  items: [b]\n")
    assert [(p.line, p.severity) for p in problems] == [(3, "warning")]


def test_top_level_mapping_is_rejected():
    found = errors(check("rule: r\ndesc: d\n"))
    assert [p.line for p in found] == [1]
    assert "YAML sequence" in found[0].message


def test_empty_file_is_valid():
    assert check("# only a comment\n") == []


def test_base_file_problems_are_warnings():
    broken_base = RulesFile("base.yaml", "- rule: r\n  priority: urgent\n")
    problems = validate_rules([], [broken_base])
    assert {p.severity for p in problems} == {"warning"}
