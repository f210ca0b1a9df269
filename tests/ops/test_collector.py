"""The garbage-collector settings: applied as configured, validated by name."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import ConfigError, ServerSettings, Settings, load_settings
from gateway.ops.collector import tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_the_defaults_freeze_start_up_and_raise_the_first_threshold() -> None:
    gc.unfreeze()
    survivor = [object() for _ in range(10)]  # something start-up allocated
    tune_collector(Settings().server)
    assert gc.get_threshold() == (10_000, 10, 10)
    assert gc.get_freeze_count() > 0
    assert survivor


@pytest.mark.usefixtures("restored_collector")
def test_null_and_false_leave_the_collector_alone() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    tune_collector(ServerSettings(gc_freeze=False, gc_threshold=None))
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("bad", ["[0, 10, 10]", "[1000, 10]", "[a, 1, 1]"])
def test_a_bad_threshold_is_refused_by_name(bad: str, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"server:\n  gc_threshold: {bad}\n")
    with pytest.raises(ConfigError, match=r"server\.gc_threshold"):
        load_settings(str(path))
