"""Generate helm/falco-router/values.schema.json: the chart's own values plus the router config model.

The ``config`` key of the chart's values is the router's config file, so its schema comes from
``RouterConfig.model_json_schema()``: a value the router would reject at start-up (an unknown output
type, a misspelt key) fails ``helm install`` instead. Run after changing the config model or the
chart's values; tests/test_helm_chart.py fails while the committed file is stale.

    python helm/gen_schema.py            # rewrite the file
    python helm/gen_schema.py --check    # exit 1 when the file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from router.config import RouterConfig

SCHEMA_PATH = Path(__file__).resolve().parent / "falco-router" / "values.schema.json"

_OBJECT = {"type": "object"}
_STRING = {"type": "string"}


def _closed(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


def _probe() -> dict[str, Any]:
    number = {"type": "integer", "minimum": 0}
    return _closed(
        {
            "initialDelaySeconds": number,
            "periodSeconds": {"type": "integer", "minimum": 1},
            "timeoutSeconds": {"type": "integer", "minimum": 1},
            "failureThreshold": {"type": "integer", "minimum": 1},
        }
    )


def chart_schema() -> dict[str, Any]:
    """Build the whole values schema, with the config model's definitions hoisted to the root."""
    config = RouterConfig.model_json_schema(ref_template="#/$defs/{model}")
    definitions = config.pop("$defs", {})
    properties: dict[str, Any] = {
        "mode": {
            "enum": ["sidecar", "standalone"],
            "description": "sidecar: attach to Falco's pods. standalone: StatefulSet and Service.",
        },
        "image": _closed(
            {
                "repository": {"type": "string", "minLength": 1},
                "tag": _STRING,
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            }
        ),
        "imagePullSecrets": {"type": "array"},
        "nameOverride": _STRING,
        "fullnameOverride": _STRING,
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "config": config,
        "rules": {"type": "object", "additionalProperties": {"type": "string"}},
        "secrets": _closed(
            {
                "existingSecret": _STRING,
                "env": {
                    "type": "array",
                    "items": _closed(
                        {
                            "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                            "key": {"type": "string", "minLength": 1},
                        },
                        required=["name", "key"],
                    ),
                },
                "mountPath": _STRING,
            }
        ),
        "extraEnv": {"type": "array"},
        "resources": _OBJECT,
        "probes": _closed({"liveness": _probe(), "readiness": _probe()}),
        "podSecurityContext": _OBJECT,
        "securityContext": _OBJECT,
        "serviceAccount": _closed({"create": {"type": "boolean"}, "name": _STRING, "annotations": _OBJECT}),
        "rbac": _closed({"create": {"type": "boolean"}}),
        "stateDir": {"type": "string", "pattern": "^/"},
        "standalone": _closed(
            {
                "replicas": {"type": "integer", "minimum": 0},
                "podDisruptionBudget": _closed(
                    {"enabled": {"type": "boolean"}, "maxUnavailable": {"type": ["integer", "string"]}}
                ),
                "persistence": _closed(
                    {
                        "enabled": {"type": "boolean"},
                        "storageClassName": _STRING,
                        "size": _STRING,
                        "accessModes": {"type": "array", "items": _STRING, "minItems": 1},
                    }
                ),
                "service": _closed(
                    {"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}, "annotations": _OBJECT}
                ),
                "podAnnotations": _OBJECT,
                "podLabels": _OBJECT,
                "nodeSelector": _OBJECT,
                "tolerations": {"type": "array"},
                "affinity": _OBJECT,
                "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
            }
        ),
        "sidecar": _closed(
            {
                "falcoServiceAccount": _closed(
                    {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string", "minLength": 1}},
                    required=["name", "namespace"],
                ),
                "falcoDaemonSetName": {"type": "string", "minLength": 1},
                "falcoPodLabels": _OBJECT,
                "ingest": {"enum": ["http", "grpc"]},
                "signalFalco": {"type": "boolean"},
                "rulesDir": {"type": "string", "pattern": "^/"},
                "runDir": {"type": "string", "pattern": "^/"},
            }
        ),
        "serviceMonitor": _closed({"enabled": {"type": "boolean"}, "interval": _STRING, "labels": _OBJECT}),
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "falco-router chart values",
        "type": "object",
        "additionalProperties": False,
        "required": ["mode", "config"],
        "properties": properties,
        "$defs": definitions,
    }


def render() -> str:
    """Return the schema file's text."""
    return json.dumps(chart_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema, or with --check report whether the committed file is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is stale: run python helm/gen_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
