"""The committed results: every leaderboard row says where it came from, no run stands twice,
and the README's tables are the ones the CSVs give. A row committed without regenerating the
README, or a hand-pasted number, fails here before it can land."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULT_BOARDS = sorted(p for p in (ROOT / "leaderboards").rglob("*.csv") if p.name != "throughput.csv")
PROVENANCE = ("run_id", "timestamp", "device", "git_commit", "seed", "eval_split", "torch_version",
              "experiment_id", "config_hash", "config_json")


def _rows(board: Path) -> list[dict[str, str]]:
    with board.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_there_are_committed_result_boards() -> None:
    names = {p.relative_to(ROOT / "leaderboards").as_posix() for p in RESULT_BOARDS}
    assert {"digits.csv", "cifar10.csv", "tiny-imagenet.csv"} <= names


@pytest.mark.parametrize("board", RESULT_BOARDS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_row_records_its_provenance_once(board: Path) -> None:
    rows = _rows(board)
    assert rows, f"{board} has no rows"
    for number, row in enumerate(rows, start=2):
        missing = [column for column in PROVENANCE if not (row.get(column) or "").strip()]
        assert not missing, f"{board.name} line {number} lacks {missing}"
        assert len(row["git_commit"]) >= 7, f"{board.name} line {number}: commit {row['git_commit']!r}"
    hashes = [row["config_hash"] for row in rows]
    twice = sorted({h for h in hashes if hashes.count(h) > 1})
    assert not twice, f"{board.name}: runs recorded more than once: {twice}"


def test_readme_tables_match_the_leaderboards() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), "--check",
                           str(ROOT / "README.md")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
