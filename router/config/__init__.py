"""The router's configuration: one closed, typed model loaded from YAML, with every problem reported.

``load_config`` parses and validates a file and raises ``ConfigError`` listing each problem with its
file, line, key path, the value found and what was expected. Secrets are checked separately by
``resolve_secrets`` because ``falco-router check`` can run where the secrets are not mounted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import Field, ValidationError, model_validator

from router.config.base import SecretRef, StrictModel
from router.config.falco_rules import FalcoRulesConfig
from router.config.ingest import GrpcIngestConfig, HttpIngestConfig
from router.config.kubernetes import KubernetesConfig
from router.config.outputs import OutputConfig
from router.config.policy import PolicyConfig
from router.config.routes import RouteConfig
from router.config.spool import ShutdownConfig, SpoolConfig

_Model = TypeVar("_Model", bound=StrictModel)

_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-auth-token", "cookie"}
)
_OUTPUT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class IngestConfig(StrictModel):
    """Where alerts come in."""

    http: HttpIngestConfig = Field(default_factory=HttpIngestConfig, description="Falco http_output ingest.")
    grpc: GrpcIngestConfig = Field(default_factory=GrpcIngestConfig, description="Falco gRPC output ingest.")


class LogConfig(StrictModel):
    """The router's own logs (structured, one JSON object per line on stderr)."""

    level: str = Field(default="info", pattern="^(debug|info|warning|error)$", description="Lowest level written.")
    format: str = Field(
        default="json", pattern="^(json|console)$", description="json for machines, console for people."
    )


class RouterConfig(StrictModel):
    """The whole configuration of one falco-router process."""

    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Inputs.")
    outputs: dict[str, OutputConfig] = Field(min_length=1, description="Named outputs.")
    routes: list[RouteConfig] = Field(min_length=1, description="Routes from alerts to outputs.")
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig, description="Kubernetes enrichment.")
    falco_rules: FalcoRulesConfig = Field(
        default_factory=FalcoRulesConfig, description="Validate, deploy and hot-reload Falco's rules files."
    )
    spool: SpoolConfig | None = Field(
        default=None, description="Durable per-output queues on disk; without it the queues are in memory."
    )
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig, description="Graceful shutdown.")
    policy: PolicyConfig = Field(
        default_factory=PolicyConfig, description="Policy files: allow-list, dedup, correlation."
    )

    @model_validator(mode="after")
    def _references(self) -> RouterConfig:
        problems: list[str] = []
        for name in self.outputs:
            if not _OUTPUT_NAME.fullmatch(name):
                problems.append(f"output name {name!r} must be lower-case letters, digits, '-' or '_' (at most 63)")
        seen: set[str] = set()
        for index, route in enumerate(self.routes):
            if route.name in seen:
                problems.append(
                    f"routes.{index}.name {route.name!r} is used by another route; route names must be unique"
                )
            seen.add(route.name)
            for output in route.outputs:
                if output not in self.outputs:
                    problems.append(
                        f"routes.{index}.outputs names {output!r}, which is not an output; "
                        f"defined outputs: {', '.join(sorted(self.outputs))}"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self


DEFAULT_CONFIG_YAML = """\
# The embedded default: HTTP ingest on 127.0.0.1:2801, every alert to stdout as one JSON line.
ingest:
  http:
    listen: 127.0.0.1:2801
outputs:
  stdout:
    type: stdout
routes:
  - name: everything
    outputs: [stdout]
  # Falco's internal alerts (syscall drops, hot restart failures) are health events, which the
  # routes for security alerts leave out by default.
  - name: ops
    internal: only
    outputs: [stdout]
"""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config: where, the value found, and what was expected."""

    path: str
    message: str
    file: str | None = None
    line: int | None = None
    value: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file and self.line:
            where = f"{self.file}:{self.line}: "
        elif self.file:
            where = f"{self.file}: "
        found = f" (found {self.value})" if self.value is not None else ""
        key = self.path or "<top level>"
        return f"{where}{key}: {self.message}{found}"


class ConfigError(Exception):
    """The config is invalid; ``problems`` lists every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_config(path: Path | None) -> RouterConfig:
    """Load and validate the config file at ``path``, or the embedded default when ``path`` is None."""
    if path is None:
        return parse_config(DEFAULT_CONFIG_YAML, "<embedded default>")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(path="", message=f"cannot read the config file: {exc}", file=str(path))]) from exc
    return parse_config(text, str(path))


def parse_config(text: str, filename: str) -> RouterConfig:
    """Validate YAML config text; ``filename`` is used in problem reports."""
    return parse_yaml_model(text, filename, RouterConfig)


def parse_yaml_model(text: str, filename: str, model: type[_Model]) -> _Model:
    """Validate YAML text against a config model; raise ``ConfigError`` with every problem found."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(path="", message=f"invalid YAML: {reason}", file=filename, line=line)]) from exc

    lines: dict[tuple[str, ...], int] = {}
    problems: list[Problem] = []
    if root is not None:
        _index_lines(root, (), lines, problems, filename)
    data = yaml.safe_load(text) if root is not None else None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(Problem(path="", message="the config must be a YAML mapping", file=filename, line=1))
        raise ConfigError(problems)

    # The cross-reference checks of RouterConfig run only once every field is valid, and report without a
    # line; they run on the raw data too, so they come with the other problems and with their line.
    references = _reference_problems(data, lines, filename) if model is RouterConfig else []
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        found = _problems_from(exc, lines, filename)
        if references:
            found = [p for p in found if p.path]  # the model's own cross-reference message, now redundant
        reported = {p.path for p in found}
        problems.extend(found)
        problems.extend(p for p in references if p.path not in reported)
        raise ConfigError(problems) from exc
    if problems:
        raise ConfigError(problems)
    return config


def config_warnings(config: RouterConfig) -> list[str]:
    """Return what is valid but probably not meant, for ``check`` and the start-up log."""
    warnings = []
    if not any(route.internal in ("include", "only") for route in config.routes):
        warnings.append(
            "no route takes Falco's internal alerts (hot restart failures, dropped syscalls): they are counted as"
            " unrouted; add a route with internal: only (an ops route) or internal: include"
        )
    for name, output in config.outputs.items():
        url = str(getattr(output, "url", "") or "")
        if url and redact_url(url) != url:
            warnings.append(
                f"outputs.{name}.url carries a user name, password or query string: if they are credentials, move"
                " them to secret_headers, because the config is not a secret"
            )
        for header in getattr(output, "headers", {}) or {}:
            if header.lower() in _CREDENTIAL_HEADERS:
                warnings.append(f"outputs.{name}.headers.{header} looks like a credential: use secret_headers instead")
    used = {output for route in config.routes for output in route.outputs}
    for name in sorted(set(config.outputs) - used):
        warnings.append(f"output {name} is not used by any route, so it receives nothing")
    return warnings


def iter_secrets(value: Any, path: str = "") -> Iterator[tuple[str, SecretRef]]:
    """Yield every secret reference in a config model, with its key path."""
    if isinstance(value, SecretRef):
        yield path, value
    elif isinstance(value, StrictModel):
        for name in type(value).model_fields:
            yield from iter_secrets(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_secrets(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_secrets(item, f"{path}.{index}")


def resolve_secrets(config: RouterConfig) -> list[Problem]:
    """Check that every secret the config names can be read; return a problem for each that cannot."""
    problems = []
    for path, secret in iter_secrets(config):
        try:
            secret.reveal()
        except LookupError as exc:
            problems.append(Problem(path=path, message=str(exc)))
    return problems


def _index_lines(
    node: yaml.Node, path: tuple[str, ...], lines: dict[tuple[str, ...], int], problems: list[Problem], filename: str
) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                problems.append(
                    Problem(
                        path=".".join((*path, key)),
                        message="key appears twice in the same mapping; remove one",
                        file=filename,
                        line=key_node.start_mark.line + 1,
                    )
                )
            seen.add(key)
            _index_lines(value_node, (*path, key), lines, problems, filename)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*path, str(index)), lines, problems, filename)


def _problems_from(exc: ValidationError, lines: dict[tuple[str, ...], int], filename: str) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        # Discriminated unions add the chosen tag (such as "kafka") to the location; drop path parts
        # that are not keys in the file.
        loc = [str(part) for part in error["loc"]]
        path = _file_path(loc, lines)
        line = lines.get(tuple(path)) or _nearest_line(path, lines)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key; check the spelling against the documented settings"
        elif error["type"] == "missing":
            message = "required key is missing"
        secret = any(part in _SECRET_KEYS for part in path) or "a secret must not be written" in message
        value = None if secret else _show(error.get("input"), error["type"])
        problems.append(Problem(path=".".join(path), message=message, file=filename, line=line, value=value))
    return problems


def _reference_problems(data: dict[str, Any], lines: dict[tuple[str, ...], int], filename: str) -> list[Problem]:
    problems = _dangling_outputs(data, lines, filename)
    routes = data.get("routes")
    seen: set[str] = set()
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        name = route.get("name") if isinstance(route, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            path = ("routes", str(index), "name")
            problems.append(
                Problem(
                    path=".".join(path),
                    message=f"route name {name!r} is used by another route; route names must be unique",
                    file=filename,
                    line=lines.get(path),
                )
            )
        seen.add(name)
    return problems


def _dangling_outputs(data: dict[str, Any], lines: dict[tuple[str, ...], int], filename: str) -> list[Problem]:
    outputs = data.get("outputs")
    routes = data.get("routes")
    if not isinstance(outputs, dict) or not isinstance(routes, list):
        return []
    problems = []
    defined = ", ".join(sorted(map(str, outputs)))
    for index, route in enumerate(routes):
        names = route.get("outputs") if isinstance(route, dict) else None
        if not isinstance(names, list):
            continue
        for position, name in enumerate(names):
            if isinstance(name, str) and name not in outputs:
                path = ("routes", str(index), "outputs", str(position))
                problems.append(
                    Problem(
                        path=".".join(path[:3]),
                        message=f"names {name!r}, which is not an output; defined outputs: {defined}",
                        file=filename,
                        line=lines.get(path),
                    )
                )
    return problems


_SECRET_KEYS = frozenset({"token", "password", "webhook_url", "secret_headers"})


def _file_path(loc: list[str], lines: dict[tuple[str, ...], int]) -> list[str]:
    path: list[str] = []
    for part in loc:
        candidate = (*path, part)
        if candidate in lines or not lines:
            path.append(part)
        elif part in {"stdout", "file", "kafka", "slack", "webhook"} or part.startswith(("function-", "tagged-union")):
            continue
        else:
            path.append(part)
    return path


def _nearest_line(path: list[str], lines: dict[tuple[str, ...], int]) -> int | None:
    for end in range(len(path), -1, -1):
        line = lines.get(tuple(path[:end]))
        if line is not None:
            return line
    return None


def _show(value: Any, error_type: str) -> str | None:
    # Values of secret keys never reach this point (SecretRef rejects literals before echoing them),
    # but a whole mapping could contain one, so mappings and lists are summarised, not printed.
    if error_type == "missing" or isinstance(value, dict):
        return None
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, str):
        value = redact_url(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def redact_url(text: str) -> str:
    """Return ``text`` with the user name, password and query of a URL replaced by ``***``."""
    if "://" not in text or ("@" not in text and "?" not in text):
        return text
    scheme, _, rest = text.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    if "?" in path:
        path = path.partition("?")[0] + "?***"
    elif "?" in authority:
        authority = authority.partition("?")[0] + "?***"
    return f"{scheme}://{authority}{slash}{path}"


def secret_reference_problems(text: str, filename: str) -> list[Problem]:
    """Check the secret references of raw config text, so ``check`` reports them next to schema problems."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    lines: dict[tuple[str, ...], int] = {}
    if root is not None:
        _index_lines(root, (), lines, [], filename)
    problems = []
    for path, reference in _raw_secret_references(data, ()):
        try:
            SecretRef.model_validate(reference).reveal()
        except (ValidationError, LookupError) as exc:
            message = str(exc) if isinstance(exc, LookupError) else "invalid secret reference"
            problems.append(Problem(path=".".join(path), message=message, file=filename, line=lines.get(path)))
    return problems


def _raw_secret_references(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):
        if set(value) in ({"env"}, {"file"}):
            yield path, value
            return
        for key, item in value.items():
            yield from _raw_secret_references(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _raw_secret_references(item, (*path, str(index)))
