"""A failing dashboard tile is logged once per episode: the first failure with its traceback,
nothing while it keeps failing, one line with the count when it renders again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_django import Settings

from core.tiles import DashboardScope, TileData, dashboard_tiles
from observability.dashboard.snapshot import tiles_render


class LedgerTile:
    """A tile showing the number written in a file: it raises FileNotFoundError while the file
    is missing, as a tile reading the database raises while the database is down."""

    key = "ledger"
    title = "Ledger"
    path: Path | None = None

    def __call__(self, scope: DashboardScope) -> TileData:
        assert self.path is not None
        figure = int(self.path.read_text())
        return {"status": "ok", "figures": [{"label": "entries", "value": figure}], "rows": [], "empty": "None."}


class CalmTile:
    key = "calm"
    title = "Calm"

    def __call__(self, scope: DashboardScope) -> TileData:
        return {"status": "ok", "figures": [], "rows": [], "empty": "Nothing to see."}


ledger = LedgerTile()
calm = CalmTile()
FLEET = DashboardScope()


@pytest.fixture
def tiles(settings: Settings, tmp_path: Path) -> Iterator[Path]:
    """The ledger and the calm tile registered as a site registers tiles; yields the ledger's file."""
    settings.SENTINEL_DASHBOARD_TILES = [f"{__name__}.ledger", f"{__name__}.calm"]
    dashboard_tiles.cache_clear()
    ledger.path = tmp_path / "ledger"
    yield ledger.path
    dashboard_tiles.cache_clear()


def render(times: int, scope: DashboardScope = FLEET) -> list[dict[str, object]]:
    """The ledger tile's data from the last of `times` renders (the calm tile renders each time)."""
    ledger_data: list[dict[str, object]] = []
    for _ in range(times):
        rendered = tiles_render(scope)
        assert [tile["key"] for tile in rendered] == ["ledger", "calm"]
        assert "error" not in rendered[1]
        ledger_data.append(rendered[0])
    return ledger_data


def tile_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, bool]]:
    """(level, message, has a traceback) of the dashboard's log lines about tiles."""
    return [
        (record.levelname, record.getMessage(), record.exc_info is not None)
        for record in caplog.records
        if record.name == "sentinel.observability" and record.getMessage().startswith("dashboard tile")
    ]


def test_a_tile_that_fails_for_a_while_logs_one_traceback_then_one_recovery_line_with_the_count(
    tiles: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Given the ledger's file is missing for five renders (five seconds of the producer)
    failed = render(5)
    assert all(data["error"] is True for data in failed)
    # Then one line with the traceback, and nothing for the four renders after it
    [(level, message, traceback)] = tile_lines(caplog)
    assert (level, traceback) == ("ERROR", True)
    assert message == "dashboard tile ledger failed for the fleet; quiet until it renders again"
    assert "FileNotFoundError" in caplog.text

    # When the file is back
    caplog.clear()
    tiles.write_text("42")
    [data] = render(1)
    assert "error" not in data and data["figures"] == [{"label": "entries", "value": 42}]
    # Then one line says it renders again and how many renders failed, and later renders say nothing
    render(3)
    assert tile_lines(caplog) == [
        ("WARNING", "dashboard tile ledger renders again for the fleet after 5 failed renders", False)
    ]

    # And a new failure is a new episode, logged again with its traceback
    caplog.clear()
    tiles.unlink()
    render(2)
    assert [(level, traceback) for level, _, traceback in tile_lines(caplog)] == [("ERROR", True)]
    tiles.write_text("43")
    render(1)
    assert tile_lines(caplog)[-1][1] == "dashboard tile ledger renders again for the fleet after 2 failed renders"


def test_episodes_are_per_scope(tiles: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A tile failing for the fleet and for a tenant logs once for each, and recovers for each
    wonderland = DashboardScope("00000000-0000-4000-8000-000000000001", "wonderland")
    caplog.set_level(logging.INFO)
    for _ in range(3):
        render(1, FLEET)
        render(1, wonderland)
    assert [message for _, message, _ in tile_lines(caplog)] == [
        "dashboard tile ledger failed for the fleet; quiet until it renders again",
        "dashboard tile ledger failed for tenant wonderland; quiet until it renders again",
    ]
    tiles.write_text("1")
    render(1, FLEET)
    render(1, wonderland)
    assert [message for _, message, _ in tile_lines(caplog)][2:] == [
        "dashboard tile ledger renders again for the fleet after 3 failed renders",
        "dashboard tile ledger renders again for tenant wonderland after 3 failed renders",
    ]
