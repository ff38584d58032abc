"""Config of the outputs: named instances of each output type, with their queue and retry settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, HttpUrl, model_validator

from router.config.base import SecretRef, StrictModel, TlsClientConfig


class RetryConfig(StrictModel):
    """How an output retries a failed delivery before it gives up and dead-letters the alert."""

    initial_backoff_s: float = Field(default=0.5, gt=0, description="Delay before the first retry.")
    max_backoff_s: float = Field(default=30.0, gt=0, description="Cap on the delay between two attempts.")
    max_attempts: int = Field(
        default=100,
        ge=1,
        description=(
            "Attempts per alert, the first one included. With the default backoff, 100 attempts span 24 to 47"
            " minutes (jitter), so an outage of several minutes loses nothing."
        ),
    )
    max_age_s: float = Field(
        default=3600.0, gt=0, description="An alert still undelivered this long after it arrived is dead-lettered."
    )


class QueueConfig(StrictModel):
    """The output's own queue, which lets a slow output fall behind without delaying the others."""

    max_items: int = Field(
        default=100_000, ge=1, description="Alerts the queue holds before the overflow policy applies."
    )
    max_bytes: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Bytes of alert JSON the queue holds before the overflow policy applies. null: no limit for the"
            " spool, 32 MiB for a memory queue (about three times that in RAM)."
        ),
    )
    overflow: Literal["drop_oldest", "reject"] = Field(
        default="drop_oldest",
        description=(
            "drop_oldest: drop the oldest queued alert, counted and logged. reject: answer 503 to the sender,"
            " for senders that retry; Falco's http_output does not, and a full reject queue refuses alerts"
            " for every output."
        ),
    )


class _OutputBase(StrictModel):
    queue: QueueConfig = Field(default_factory=QueueConfig, description="Queue settings.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retry settings.")


class StdoutOutputConfig(_OutputBase):
    """Write each alert to standard output as one JSON line."""

    type: Literal["stdout"]


class FileOutputConfig(_OutputBase):
    """Append each alert to a file as one JSON line."""

    type: Literal["file"]
    path: Path = Field(description="File to append to; created if missing.")
    fsync: bool = Field(default=False, description="fsync after each batch of writes.")


class KafkaSaslConfig(StrictModel):
    """SASL authentication to the Kafka brokers."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(description="SASL mechanism.")
    username: str = Field(description="SASL user name.")
    password: SecretRef = Field(description="SASL password.")


class KafkaOutputConfig(_OutputBase):
    """Produce each alert to a Kafka topic."""

    type: Literal["kafka"]
    brokers: list[str] = Field(min_length=1, description="Bootstrap servers, host:port.")
    topic: str = Field(min_length=1, description="Topic to produce to.")
    key_field: str | None = Field(
        default="hostname",
        description="Event field whose value is the message key (per-key order is kept); null for no key.",
    )
    acks: Literal["all", "1", "0"] = Field(default="all", description="Broker acknowledgements to wait for.")
    enable_idempotence: bool = Field(
        default=True, description="Idempotent producer (no duplicates from producer retries). Needs acks=all."
    )
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="none", description="Compression codec."
    )
    client_id: str = Field(default="falco-router", description="Kafka client id.")
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Time limit for producing one batch of alerts, acknowledgements included, and for connecting at start."
        ),
    )
    close_timeout_s: float = Field(
        default=3.0, gt=0, description="Time limit for flushing and stopping the producer at shutdown."
    )
    max_message_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest message produced; a larger alert is dead-lettered."
    )
    max_batch_bytes: int = Field(
        default=524_288,
        ge=1024,
        description=(
            "Largest record batch sent to one partition in one request, capped at max_message_bytes. Keep"
            " both under the topic's max.message.bytes, because the broker rejects a larger batch and its"
            " alerts are dead-lettered."
        ),
    )
    linger_ms: int = Field(
        default=0,
        ge=0,
        description=(
            "Time aiokafka holds a batch before sending it. The router already hands over every queued alert"
            " (up to 500) at once and waits for the acknowledgement before the next batch, so a linger only"
            " adds latency."
        ),
    )
    sasl: KafkaSaslConfig | None = Field(default=None, description="SASL authentication.")
    tls: TlsClientConfig | None = Field(default=None, description="TLS to the brokers.")

    @model_validator(mode="after")
    def _idempotence_needs_acks_all(self) -> KafkaOutputConfig:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError("enable_idempotence requires acks: all; set acks: all or enable_idempotence: false")
        return self


class SlackOutputConfig(_OutputBase):
    """Post each alert to Slack with Block Kit, through the Web API or an incoming webhook."""

    type: Literal["slack"]
    token: SecretRef | None = Field(default=None, description="Bot token (xoxb-...) for chat.postMessage.")
    channel: str | None = Field(default=None, description="Channel id or name for chat.postMessage.")
    webhook_url: SecretRef | None = Field(
        default=None, description="Incoming webhook URL (a secret: anyone holding it can post)."
    )
    base_url: str = Field(default="https://slack.com/api/", description="Slack Web API base URL.")
    username: str | None = Field(default=None, description="Display name for the message, where the app may set it.")
    icon_emoji: str | None = Field(default=None, description="Icon emoji, such as :rotating_light:.")
    mention: str | None = Field(
        default=None,
        description="Operator-written mention put before the alert, such as <!here> or <@U0123>; sent unescaped.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Time limit for one Slack API call.")

    @model_validator(mode="after")
    def _one_mode(self) -> SlackOutputConfig:
        if self.webhook_url is not None and self.token is not None:
            raise ValueError("set either token (with channel) or webhook_url, not both")
        if self.webhook_url is None and self.token is None:
            raise ValueError("set token (with channel) for chat.postMessage, or webhook_url for an incoming webhook")
        if self.token is not None and not self.channel:
            raise ValueError("token needs a channel to post to")
        return self


class WebhookBatchConfig(StrictModel):
    """Several alerts per request, for receivers that accept them."""

    max_alerts: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Maximum alerts per request. A request carries the alerts queued at the time, up to this number.",
    )
    format: Literal["json_array", "json_lines"] = Field(
        default="json_array",
        description=(
            "Request body. json_array: a JSON array of alerts (application/json). json_lines: one alert per"
            " line (application/x-ndjson)."
        ),
    )


class WebhookOutputConfig(_OutputBase):
    """Send each alert as a JSON body to an HTTP endpoint, or several alerts per request when batch is set."""

    type: Literal["webhook"]
    url: HttpUrl = Field(description="Endpoint URL.")
    method: Literal["POST", "PUT"] = Field(default="POST", description="HTTP method.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers (not secrets).")
    secret_headers: dict[str, SecretRef] = Field(
        default_factory=dict, description="Headers whose values are secrets, such as Authorization."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Time limit for one request.")
    tls: TlsClientConfig | None = Field(default=None, description="TLS and mutual TLS to the endpoint.")
    signing_key: SecretRef | None = Field(
        default=None,
        description=(
            "HMAC-SHA256 key: when set, each request carries X-Falco-Router-Timestamp and "
            "X-Falco-Router-Signature: sha256=<hex of HMAC(key, timestamp + '.' + body)>."
        ),
    )
    batch: WebhookBatchConfig | None = Field(
        default=None,
        description=(
            "Send several alerts per request. null: one alert per request with the alert JSON as the body,"
            " as falcosidekick's webhook output does."
        ),
    )


OutputConfig = Annotated[
    StdoutOutputConfig | FileOutputConfig | KafkaOutputConfig | SlackOutputConfig | WebhookOutputConfig,
    Field(discriminator="type"),
]
"""Any output; the ``type`` key chooses which."""
