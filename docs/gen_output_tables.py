"""Write the settings tables of docs/outputs/*.md from the pydantic config models.

Each page contains its table between ``<!-- settings:start -->`` and ``<!-- settings:end -->``. Run
``python docs/gen_output_tables.py`` after changing an output's config; ``--check`` exits 1 when a page is
out of date (tests/outputs/test_docs.py runs the same check).
"""

from __future__ import annotations

import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from router.config.outputs import KafkaOutputConfig, SlackOutputConfig, WebhookOutputConfig

DOCS = Path(__file__).resolve().parent / "outputs"
PAGES: dict[str, type[BaseModel]] = {
    "kafka.md": KafkaOutputConfig,
    "slack.md": SlackOutputConfig,
    "webhook.md": WebhookOutputConfig,
}
START = "<!-- settings:start -->"
END = "<!-- settings:end -->"
# Sections shared by every output; documented once in docs/architecture.md rather than in each table.
SHARED = frozenset({"queue", "retry"})


def type_name(annotation: Any) -> str:
    """Return a short, readable name of a field type, such as ``list[str]`` or ``"all" | "1"``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'"{a}"' for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    if getattr(annotation, "__name__", "") == "SecretRef":
        return "secret ({env: VAR} or {file: path})"
    return getattr(annotation, "__name__", str(annotation))


def yaml_value(value: Any) -> str:
    """Return a default as it is written in YAML (true, null), other values as text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Return (setting, type, default, description) for every field, nested sections flattened."""
    out = []
    for name, field in model.model_fields.items():
        if not prefix and name in SHARED:
            continue
        key = f"{prefix}{name}"
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = "`" + repr(field.default_factory()) + "`"  # type: ignore[call-arg]
        elif field.default is PydanticUndefined:
            default = ""
        else:
            default = "`" + yaml_value(field.default) + "`"
        description = (field.description or "").replace("|", "\\|")
        if not prefix and name == "type":
            description = "Output type; selects this kind of output."
        out.append((f"`{key}`", type_name(field.annotation), default, description))
        nested = _nested_model(field.annotation)
        if nested is not None and nested.__name__ not in ("SecretRef",):
            out.extend(rows(nested, f"{key}."))
    return out


def settings_table(model: type[BaseModel]) -> str:
    """Return the markdown table of a model's settings."""
    lines = ["| setting | type | default | description |", "|---|---|---|---|"]
    lines.extend(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(model))
    return "\n".join(lines)


def render(page: str, model: type[BaseModel]) -> str:
    """Return the page text with its settings table regenerated."""
    text = (DOCS / page).read_text(encoding="utf-8")
    block = f"{START}\n{settings_table(model)}\n{END}"
    updated, count = re.subn(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if count != 1:
        raise ValueError(f"{page}: expected one {START} ... {END} block, found {count}")
    return updated


def main(argv: list[str]) -> int:
    """Regenerate the tables, or with ``--check`` report the pages that are out of date."""
    stale = []
    for page, model in PAGES.items():
        updated = render(page, model)
        if updated != (DOCS / page).read_text(encoding="utf-8"):
            stale.append(page)
            if "--check" not in argv:
                (DOCS / page).write_text(updated, encoding="utf-8")
    if stale and "--check" in argv:
        print(
            f"settings tables out of date in {', '.join(stale)}: run python docs/gen_output_tables.py", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
