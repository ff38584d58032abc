"""Output types, looked up by the ``type`` key of an output's config.

Modules are imported on first use so that a router without Kafka never imports aiokafka.
"""

from __future__ import annotations

import importlib
from typing import Any

from router.outputs.base import Output

_TYPES: dict[str, str] = {
    "stdout": "router.outputs.stream:StdoutOutput",
    "file": "router.outputs.stream:FileOutput",
    "kafka": "router.outputs.kafka:KafkaOutput",
    "slack": "router.outputs.slack:SlackOutput",
    "webhook": "router.outputs.webhook:WebhookOutput",
}


def output_class(type_name: str) -> type[Output]:
    """Return the class that implements an output type."""
    module_name, _, class_name = _TYPES[type_name].partition(":")
    cls: type[Output] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create_output(name: str, config: Any) -> Output:
    """Create the output instance described by one entry of ``outputs:``."""
    return output_class(config.type)(name, config)
