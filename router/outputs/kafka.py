"""Kafka output: produce each alert to one topic with aiokafka.

Translation of aiokafka errors::

    MessageSizeTooLargeError, RecordTooLargeError      -> PermanentError("message_too_large")
    TopicAuthorizationFailedError, auth/SASL failures  -> PermanentError("auth_failed")
    other non-retriable KafkaError                     -> PermanentError("rejected")
    KafkaTimeoutError, RequestTimedOutError, no answer -> RetriableError("timeout")
    connection and leadership errors, other KafkaError -> RetriableError("broker_unavailable")

Every wait on the broker is bounded by ``request_timeout_s`` (produce) or ``close_timeout_s`` (stop),
so a dead broker never hangs a delivery attempt or the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    CorruptRecordException,
    IllegalSaslStateError,
    InvalidRequiredAcksError,
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
    UnsupportedSaslMechanismError,
    UnsupportedVersionError,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from router.config.outputs import KafkaOutputConfig
from router.event import Event
from router.outputs.base import DeliveryError, Output, OutputStartError, PermanentError, RetriableError
from router.outputs.kafka_record import KafkaRecord, build_record

_AUTH_ERRORS = (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    IllegalSaslStateError,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)


# Errors that say this message can never be written as it is, whatever the broker's state.
_REJECTED_ERRORS = (
    CorruptRecordException,
    InvalidRequiredAcksError,
    InvalidTopicError,
    UnsupportedForMessageFormatError,
    UnsupportedVersionError,
)


def delivery_error(exc: BaseException) -> DeliveryError:
    """Translate an exception raised while producing into the router's delivery error."""
    if isinstance(exc, MessageSizeTooLargeError | RecordTooLargeError):
        return PermanentError("message_too_large", str(exc))
    if isinstance(exc, _AUTH_ERRORS):
        return PermanentError("auth_failed", type(exc).__name__)
    if isinstance(exc, KafkaTimeoutError | RequestTimedOutError | TimeoutError):
        return RetriableError("timeout", str(exc) or type(exc).__name__)
    if isinstance(exc, _REJECTED_ERRORS):
        return PermanentError("rejected", type(exc).__name__)
    # Everything else is retried within max_attempts and max_age_s. aiokafka marks some server errors as not
    # retriable (UnknownError, the broker's UNKNOWN_SERVER_ERROR), but brokers answer them while they
    # restart, and dead-lettering on the first one lost alerts in a broker outage.
    return RetriableError("broker_unavailable", str(exc) or type(exc).__name__)


def producer_options(config: KafkaOutputConfig) -> dict[str, Any]:
    """Return the keyword arguments of ``AIOKafkaProducer`` for this output (reads the SASL secret)."""
    options: dict[str, Any] = {
        "bootstrap_servers": config.brokers,
        "client_id": config.client_id,
        "acks": "all" if config.acks == "all" else int(config.acks),
        "enable_idempotence": config.enable_idempotence,
        "compression_type": None if config.compression == "none" else config.compression,
        "linger_ms": config.linger_ms,
        # A batch over the topic's message limit is rejected whole, so it never exceeds max_message_bytes.
        "max_batch_size": min(config.max_batch_bytes, config.max_message_bytes),
        "request_timeout_ms": int(config.request_timeout_s * 1000),
        "max_request_size": config.max_message_bytes,
    }
    if config.tls is not None:
        options["ssl_context"] = config.tls.ssl_context()
    if config.sasl is not None:
        options["sasl_mechanism"] = config.sasl.mechanism
        options["sasl_plain_username"] = config.sasl.username
        options["sasl_plain_password"] = config.sasl.password.reveal()
    if config.sasl is not None:
        options["security_protocol"] = "SASL_SSL" if config.tls is not None else "SASL_PLAINTEXT"
    elif config.tls is not None:
        options["security_protocol"] = "SSL"
    return options


def _discard_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


_PARTITIONER = DefaultPartitioner()
"""aiokafka's partitioner for ``producer.send()``, which this output no longer calls but whose choice it keeps."""


@dataclass(slots=True)
class _RecordBatch:
    """One aiokafka record batch of a ``send_batch`` call, and the alerts in it."""

    partition: int
    sequence: int
    """0 for the first batch of its partition in the call, 1 for the second, and so on."""
    builder: Any
    indices: list[int] = field(default_factory=list)
    future: asyncio.Future[Any] | None = None

    def append(self, index: int, record: KafkaRecord) -> bool:
        """Append the record of alert ``index``, or return False when the batch is full."""
        metadata = self.builder.append(timestamp=None, key=record.key, value=record.value, headers=record.headers)
        if metadata is None:
            return False
        self.indices.append(index)
        return True


def _fail_later_alerts_of_failed_partitions(
    results: list[DeliveryError | None], partitions: list[int | None]
) -> list[DeliveryError | None]:
    """Mark failed, in place, the delivered alerts that follow a retriable failure in the same partition.

    A partition of None (not known because the call failed early) counts as every partition.
    """
    failed: set[int | None] = set()
    for index, error in enumerate(results):
        partition = partitions[index]
        if error is not None:
            if error.retriable:
                failed.add(partition)
        elif partition in failed or None in failed:
            results[index] = RetriableError("ordering", "an earlier alert of the same partition failed")
    return results


class KafkaOutput(Output):
    """Produces each alert to a Kafka topic; the key keeps the alerts of one host (by default) in order."""

    type_name = "kafka"
    max_batch = 500

    def __init__(self, name: str, config: KafkaOutputConfig) -> None:
        super().__init__(name, config)
        self.config: KafkaOutputConfig = config
        self._producer: AIOKafkaProducer | None = None
        self._options: dict[str, Any] = {}

    async def start(self) -> None:
        """Check the settings and connect; an unreachable broker is an outage, not a start-up error.

        Missing secrets, unreadable TLS files, a missing codec and rejected credentials stop the router,
        because no retry can fix them. A broker that does not answer yet (a node reboot, a rolling
        restart) only delays this output: its alerts wait in its queue, the delivery loop retries the
        connection, and the other outputs start and deliver meanwhile.
        """
        try:
            options = producer_options(self.config)
        except LookupError as exc:
            raise OutputStartError(f"SASL password unavailable: {exc}") from exc
        except OSError as exc:
            raise OutputStartError(f"cannot load the TLS files: {exc}") from exc
        codec_available = {"gzip": has_gzip, "snappy": has_snappy, "lz4": has_lz4, "zstd": has_zstd}
        if self.config.compression != "none" and not codec_available[self.config.compression]():
            # Checked before creating the producer, which would fail half-built and warn when collected.
            raise OutputStartError(
                f"compression {self.config.compression} needs a codec library that is not installed: "
                "install aiokafka's extra for it, or set compression to gzip or none"
            )
        self._options = options
        try:
            await self._connect()
        except PermanentError as exc:
            raise OutputStartError(str(exc)) from exc
        except RetriableError as exc:
            self._producer = None
            self.unavailable_reason = exc.reason

    async def _connect(self) -> None:
        """Create and start the producer; raise a delivery error saying why it could not connect."""
        try:
            producer = AIOKafkaProducer(**self._options)
        except (KafkaError, ValueError, RuntimeError) as exc:
            raise PermanentError("invalid_settings", f"invalid producer settings: {exc}") from exc
        brokers = ",".join(self.config.brokers)
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                await producer.start()
        except _AUTH_ERRORS as exc:
            await self._stop_bounded(producer)
            raise PermanentError("auth_failed", f"the Kafka brokers {brokers} rejected the credentials") from exc
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._stop_bounded(producer)
            detail = f"cannot connect to the Kafka brokers {brokers}: {type(exc).__name__} {exc}".rstrip()
            raise RetriableError("broker_unavailable", detail) from exc
        self._producer = producer

    async def send(self, event: Event) -> None:
        (error,) = await self.send_batch([event])
        if error is not None:
            raise error

    async def send_batch(self, events: Sequence[Event]) -> list[DeliveryError | None]:
        """Produce every alert, then wait for every acknowledgement within ``request_timeout_s``.

        The alerts go to aiokafka as record batches, one or more per partition, built here instead of one
        ``producer.send()`` per alert, because that call costs a coroutine, a future and a metadata check
        per alert. Messages of one key go to one partition, and aiokafka keeps one request in flight per
        broker, so they are written in order. When one of them fails, the later ones of the same partition
        are reported failed too, so that the retry writes them again after it rather than leaving them
        before it.
        """
        if self._producer is None:
            try:
                await self._connect()
            except DeliveryError as exc:
                return [exc] * len(events)
            self.unavailable_reason = None
        assert self._producer is not None
        producer = self._producer
        results: list[DeliveryError | None] = [None] * len(events)
        partitions: list[int | None] = [None] * len(events)
        batches: list[_RecordBatch] = []
        unsent: DeliveryError = RetriableError("timeout", f"not sent within {self.config.request_timeout_s} s")
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                try:
                    batches = await self._build_batches(producer, events, results, partitions)
                    # The first batch of every partition before the second of any, because aiokafka waits
                    # until a partition's previous batch is sent before it takes the next one.
                    for batch in sorted(batches, key=lambda b: b.sequence):
                        batch.future = await producer.send_batch(
                            batch.builder, self.config.topic, partition=batch.partition
                        )
                except KafkaError as exc:
                    unsent = delivery_error(exc)
                futures = [batch.future for batch in batches if batch.future is not None]
                if futures:
                    await asyncio.wait(futures)
        except TimeoutError:
            pass
        built = set()
        for batch in batches:
            outcome = unsent if batch.future is None else self._result_of(batch.future)
            for index in batch.indices:
                results[index] = outcome
            built.update(batch.indices)
        for index in range(len(events)):
            if results[index] is None and index not in built:
                results[index] = unsent
        return _fail_later_alerts_of_failed_partitions(results, partitions)

    async def _build_batches(
        self,
        producer: AIOKafkaProducer,
        events: Sequence[Event],
        results: list[DeliveryError | None],
        partitions: list[int | None],
    ) -> list[_RecordBatch]:
        """Append each alert to a record batch of its partition, and fill in ``partitions`` and ``results``.

        The partition of a key is the one aiokafka's default partitioner picks (murmur2 of the key, as
        the Java client does), so a key keeps the partition it had with ``producer.send()``. Alerts
        without a key all go to one partition picked at random per call, rather than one random partition
        per alert, which would split the call into small batches.
        """
        topic = self.config.topic
        all_partitions = sorted(await producer.partitions_for(topic))
        available = list(producer.client.cluster.available_partitions_for_topic(topic))
        partition_of_key: dict[bytes | None, int] = {None: _PARTITIONER(None, all_partitions, available)}
        open_batches: dict[int, _RecordBatch] = {}
        batches: list[_RecordBatch] = []
        for index, event in enumerate(events):
            record = build_record(event, self.config.key_field)
            partition = partition_of_key.get(record.key)
            if partition is None:
                partition = _PARTITIONER(record.key, all_partitions, available)
                partition_of_key[record.key] = partition
            partitions[index] = partition
            # The same check as producer.send(), which the batch API skips.
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, record.headers)
            if size > self.config.max_message_bytes:
                detail = f"the record is {size} bytes, above max_message_bytes {self.config.max_message_bytes}"
                results[index] = PermanentError("message_too_large", detail)
                continue
            batch = open_batches.get(partition)
            if batch is None or not batch.append(index, record):
                sequence = batch.sequence + 1 if batch is not None else 0
                batch = _RecordBatch(partition, sequence, producer.create_batch())
                open_batches[partition] = batch
                batches.append(batch)
                batch.append(index, record)  # the first record of a batch always fits
        return batches

    def _result_of(self, future: asyncio.Future[Any]) -> DeliveryError | None:
        if not future.done():
            # The message may still be written later; the retry can then duplicate it, which the
            # falco-router-id header lets consumers detect. Its late outcome is consumed so that
            # asyncio does not report an exception that was never retrieved.
            future.add_done_callback(_discard_outcome)
            return RetriableError("timeout", f"no acknowledgement within {self.config.request_timeout_s} s")
        if future.cancelled():
            return RetriableError("broker_unavailable", "produce cancelled")
        exc = future.exception()
        return None if exc is None else delivery_error(exc)

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await self._stop_bounded(producer)

    async def _stop_bounded(self, producer: AIOKafkaProducer) -> None:
        # producer.stop() flushes what is buffered and waits for the broker, which could take forever when
        # the broker is dead. So it gets close_timeout_s and is then abandoned. Alerts not yet acknowledged
        # are still in the router's queue, where the shutdown counts them as lost.
        with contextlib.suppress(TimeoutError, KafkaError, OSError):
            async with asyncio.timeout(self.config.close_timeout_s):
                await producer.stop()
