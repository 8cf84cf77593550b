"""The code a benchmark measured, from git: the commit, and the served files that differ from it.

A run records it at the start and compares at the end: when the code changed meanwhile, the rows
may measure two versions of it, and the report is not written.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass

from bench.common import REPO, BenchError


@dataclass(frozen=True)
class CodeState:
    """A commit, and the files that differ from it (path -> content hash, '' when deleted). The
    benchmarks, docs and tests are left out: they change nothing the servers load."""

    commit: str
    dirty: dict[str, str]

    def describe(self) -> str:
        """`abc1234`, or `abc1234 with uncommitted changes to a.py, b.py`."""
        return self.commit[:7] + (f" with uncommitted changes to {', '.join(sorted(self.dirty))}" if self.dirty else "")


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def commit_of(name: str) -> tuple[str, str]:
    """The full hash and the subject line of commit `name` (`HEAD`, a short hash, a tag);
    BenchError when git knows no such commit."""
    result = subprocess.run(
        ["git", "log", "-1", "--format=%H %s", f"{name}^{{commit}}", "--"], cwd=REPO, capture_output=True, text=True
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise BenchError(f"no commit {name!r} in {REPO}: {result.stderr.strip() or 'git found none'}")
    commit, _, subject = result.stdout.strip().partition(" ")
    return commit, subject


def _served(path: str) -> bool:
    return not (path.startswith(("bench/", "docs/", "tests/")) or "/tests/" in path or path.endswith(".md"))


def code_state(since: str | None = None) -> CodeState:
    """HEAD (or `since`) and the served files of the working tree that differ from it."""
    commit = since or _git("rev-parse", "HEAD").strip()
    changed = _git("diff", "--name-only", commit).splitlines()
    changed += _git("ls-files", "--others", "--exclude-standard").splitlines()
    dirty = {}
    for path in filter(_served, changed):
        file = REPO / path
        dirty[path] = hashlib.sha1(file.read_bytes(), usedforsecurity=False).hexdigest() if file.exists() else ""
    return CodeState(commit, dirty)


def check_unchanged(state: CodeState) -> None:
    """BenchError when the served code now differs from `state` (taken when the run started): the
    figures may measure two versions of it."""
    if code_state(since=state.commit) != state:
        raise BenchError(
            f"the code changed during the run (since {state.describe()}): the figures may measure two versions "
            "of it, so docs were not written; run again"
        )
