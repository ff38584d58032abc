"""The settings tables in docs/outputs match the config models they document."""

from __future__ import annotations

import importlib.util

import pytest

from tests.support.data import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("gen_output_tables", PROJECT_ROOT / "docs" / "gen_output_tables.py")
assert spec is not None and spec.loader is not None
gen_settings = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen_settings)


@pytest.mark.parametrize("page", sorted(gen_settings.PAGES))
def test_settings_table_matches_model(page: str) -> None:
    current = (gen_settings.DOCS / page).read_text(encoding="utf-8")

    assert gen_settings.render(page, gen_settings.PAGES[page]) == current, "run python docs/gen_output_tables.py"


def test_settings_table_lists_every_field() -> None:
    table = gen_settings.settings_table(gen_settings.PAGES["webhook.md"])

    for name in ("url", "method", "headers", "secret_headers", "timeout_s", "tls.ca_file", "signing_key"):
        assert f"| `{name}` |" in table, name
