"""A metrics folder per run (``core.prometheus.run_join``), with real processes: the first process
of a run empties what an ended run left, processes that join a live run never do, whenever and
however many start."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import BASE_DIR, python_command


@contextlib.contextmanager
def members(directory: Path, count: int) -> Iterator[list[tuple[bool, str]]]:
    """Starts `count` run members at once; yields what each reported (started?, its file) while all
    are still alive; they leave the run when the block ends."""
    command = python_command("-m", "core.tests.metrics_run_member", str(directory))
    processes = [
        subprocess.Popen(command, cwd=BASE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    try:
        reports = []
        for process in processes:
            assert process.stdout is not None
            word, started, name = process.stdout.readline().split()  # blocks until that one joined
            assert word == "started", word
            reports.append((started == "True", name))
        yield reports
    finally:
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=10)


def test_the_first_process_of_a_run_empties_what_the_last_run_left(tmp_path: Path) -> None:
    # given the files of an ended run's processes
    leftover = tmp_path / "counter_oldhost-4242.db"
    leftover.write_bytes(b"\0" * 8)

    # when a process starts with nobody else alive
    with members(tmp_path, 1) as [(started, name)]:
        # then it started a new run and removed the old counts, keeping its own
        assert started
        assert not leftover.exists()
        assert (tmp_path / name).exists()


def test_a_process_joining_a_live_run_removes_nothing(tmp_path: Path) -> None:
    # given a live run; when a second process starts while its first is alive
    with members(tmp_path, 1) as [(first_started, first_file)], members(tmp_path, 1) as [(second_started, second_file)]:
        # then it joined: both files are there
        assert first_started and not second_started
        assert {first_file, second_file} <= {path.name for path in tmp_path.glob("*.db")}

    # and once every process of that run has ended, the next process starts afresh
    with members(tmp_path, 1) as [(started, name)]:
        assert started
        assert [path.name for path in tmp_path.glob("*.db")] == [name]


def test_processes_starting_together_make_one_run_and_keep_every_file(tmp_path: Path) -> None:
    (tmp_path / "counter_oldhost-1.db").write_bytes(b"\0" * 8)

    # when eight processes start at the same moment
    with members(tmp_path, 8) as reports:
        # then exactly one started the run, and no process's file was removed by another
        assert sum(started for started, _ in reports) == 1
        assert {path.name for path in tmp_path.glob("*.db")} == {name for _, name in reports}
