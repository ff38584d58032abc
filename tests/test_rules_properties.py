"""Properties of the parts with rules: the rules-set hash and the condition scanner."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.rules.condition import find_references
from router.rules.files import RulesSet

file_names = st.from_regex(r"[a-z][a-z0-9_]{0,10}\.ya?ml", fullmatch=True)
rules_sets = st.dictionaries(file_names, st.binary(max_size=64), min_size=1, max_size=5)


@given(rules_sets)
def test_hash_ignores_insertion_order(files):  # type: ignore[no-untyped-def]
    assert RulesSet(dict(reversed(list(files.items())))).sha256 == RulesSet(files).sha256


@given(rules_sets, st.binary(min_size=1, max_size=8))
def test_hash_changes_with_any_content_change(files, extra):  # type: ignore[no-untyped-def]
    name = sorted(files)[0]
    changed = {**files, name: files[name] + extra}
    assert RulesSet(changed).sha256 != RulesSet(files).sha256


@given(rules_sets)
def test_hash_changes_with_a_rename(files):  # type: ignore[no-untyped-def]
    name = sorted(files)[0]
    renamed = {("z" + k if k == name else k): v for k, v in files.items()}
    if set(renamed) != set(files) and len(renamed) == len(files):
        assert RulesSet(renamed).sha256 != RulesSet(files).sha256


@given(st.text(max_size=200))
def test_scanner_accepts_any_text(condition):  # type: ignore[no-untyped-def]
    refs = find_references(condition)
    assert all(name in condition for name in refs.macros)


@given(st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True))
def test_value_after_operator_is_not_macro(word):  # type: ignore[no-untyped-def]
    assert find_references(f"proc.name = {word}").macros == []


@given(st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True))
def test_bare_word_term_is_macro(word):  # type: ignore[no-untyped-def]
    if word not in {"and", "or", "not"}:
        assert find_references(f"proc.name = x and {word}").macros == [word]
