"""The collector settings applied once the router has started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from router.gc_tuning import YOUNG_THRESHOLD, tune_for_throughput


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_gc")
def test_tuning_freezes_and_raises_threshold() -> None:
    start_up_state = {"config": [1, 2, 3]}
    tune_for_throughput()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    # Objects alive at start-up are out of the collector's sight; later cycles are still collected.
    assert not any(obj is start_up_state for obj in gc.get_objects())
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
