"""Leaderboard CSVs: one fixed schema, appended atomically under a file lock."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from leakbench.errors import LeakbenchError
from leakbench.evaluation import METRICS

# The schema, defined once. Pipeline order first, then metrics, then what makes a row reproducible.
KEY_COLUMNS = ("dataset", "leakage", "strength", "reliability", "leak_stage", "masker", "method",
               "supervision", "backbone", "recipe", "epochs")
COLUMNS = (
    "run_id", "timestamp", *KEY_COLUMNS, "batch_size", "lr", "seed",
    *METRICS,
    "train_seconds", "images_per_second", "device", "precision", "backbone_config", "dataset_notes",
    "torch_version", "timm_version", "leakbench_version", "providers", "git_commit", "config_hash", "config_json",
)
GROUP_COLUMNS = KEY_COLUMNS


def leaderboard_path(directory: Path, dataset: str) -> Path:
    return Path(directory) / f"{dataset}.csv"


def append_row(path: Path, row: dict[str, Any], columns: tuple[str, ...] = COLUMNS) -> None:
    """Append one row; concurrent writers never lose or tear rows, readers never see half a file."""
    from filelock import FileLock

    unknown = set(row) - set(columns)
    if unknown:
        raise ValueError(f"row has columns outside the schema: {sorted(unknown)}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=120):
            _rewrite_with_row(path, row, columns)
    except OSError as exc:  # an unwritable --leaderboard-dir is a user error, not a crash
        raise LeakbenchError(f"cannot write {path}: {exc.strerror or exc}; choose a writable --leaderboard-dir") \
            from None


def _rewrite_with_row(path: Path, row: dict[str, Any], columns: tuple[str, ...]) -> None:
    """Under the lock: the old content plus the row, written to a temp file and renamed over."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing:
        header = next(csv.reader(io.StringIO(existing)), [])
        if tuple(header) != columns:
            raise LeakbenchError(f"{path} has a different column layout; move it aside and run again")
        if not existing.endswith("\n"):
            existing += "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if not existing:
        writer.writeheader()
    writer.writerow({c: _cell(row.get(c)) for c in columns})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(existing + buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cell(value: Any) -> str:
    if value is None:
        return ""  # "does not apply" stays empty, never zero
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def result_files(directory: Path, dataset: str | None = None) -> list[Path]:
    """Leaderboard CSVs in ``directory`` that use the run schema (skips e.g. throughput.csv)."""
    directory = Path(directory)
    candidates = [leaderboard_path(directory, dataset)] if dataset else sorted(directory.glob("*.csv"))
    found = []
    for path in candidates:
        if path.is_file():
            with path.open(encoding="utf-8") as handle:
                if tuple(next(csv.reader(handle), [])) == COLUMNS:
                    found.append(path)
    return found


def read(paths: Iterable[Path]):
    """All rows of the given CSVs as one DataFrame (empty cells are NaN)."""
    import pandas as pd

    frames = []
    for path in paths:
        try:
            frames.append(pd.read_csv(path, dtype={"leakage": str, "masker": str, "git_commit": str}))
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise LeakbenchError(f"cannot read leaderboard {path}: {exc}") from None
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)


def aggregate(frame, dataset: str | None = None, leakage: str | None = None):
    """Mean, std and n over seeds for each configuration, best clean accuracy first."""
    for column, wanted in (("dataset", dataset), ("leakage", leakage)):
        if wanted:
            frame = frame[frame[column].astype(str).str.split(":").str[0] == wanted.split(":")[0]]
    if frame.empty:
        return frame
    frame = frame.assign(**{c: frame[c].fillna("").astype(str) for c in GROUP_COLUMNS})
    metrics = [m for m in METRICS if m in frame]
    grouped = frame.groupby(list(GROUP_COLUMNS), sort=False)[metrics]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    table = mean.join(std.add_suffix("_std"))
    table["n"] = grouped.size()
    table = table.reset_index().sort_values("acc_clean", ascending=False, kind="stable")
    return table.reset_index(drop=True)


def render(table, fmt: str = "table") -> str:
    """Terminal table, markdown or CSV of an aggregated leaderboard: ``mean ± std``."""
    import pandas as pd

    if table.empty:
        return "no runs match"
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.4g")
    shown = ["dataset", "leakage", "method", "masker", "supervision", "backbone", "recipe", "epochs", "n"]
    shown = [c for c in shown if c in table]
    out = table[shown].copy()
    if (pd.to_numeric(table["strength"]) != 1).any() or (pd.to_numeric(table["reliability"]) != 1).any():
        out.insert(2, "strength", table["strength"])
        out.insert(3, "reliability", table["reliability"])
    for metric in ("acc_clean", "acc_clean_masked", "acc_spoiled", "leak_following", "mask_size_pct",
                   "leak_coverage"):
        digits = 2 if metric.startswith("acc") or metric.endswith("pct") else 3
        out[metric] = [_pm(m, s, digits) for m, s in zip(table[metric], table[f"{metric}_std"], strict=True)]
    if fmt == "markdown":
        return _markdown(out)
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 40):
        return out.to_string(index=False)


def _markdown(frame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(map(str, r)) + " |" for r in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _pm(mean: float, std: float, digits: int) -> str:
    import math

    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def pivot(table, metric: str = "acc_clean", default_maskers: dict[str, str] | None = None, fmt: str = "table") -> str:
    """Methods side by side (RobustBench-style): one column per method (and non-default
    masker), one row per setting that varies among the runs, cells ``mean ± std (n)``."""
    import pandas as pd

    if table.empty:
        return "no runs match"
    if metric not in METRICS:
        raise LeakbenchError(f"unknown metric '{metric}'; choose from {', '.join(METRICS)}")
    defaults = default_maskers or {}
    label = [m if k in ("", "none", defaults.get(m)) else f"{m} + {k}"
             for m, k in zip(table["method"], table["masker"], strict=True)]
    settings = [c for c in GROUP_COLUMNS if c not in ("method", "masker", "supervision")]
    for column in settings:  # a blank means "does not apply" (clean runs have no leak stage): not its own row
        values = set(table[column]) - {""}
        if len(values) == 1:
            table = table.assign(**{column: table[column].replace("", values.pop())})
    varying = [c for c in settings if table[c].nunique() > 1]
    rows = varying or ["dataset"]
    digits = 3 if metric in ("leak_following", "leak_mask_share", "leak_coverage") else 2
    cells = table.assign(label=label, cell=[
        "" if pd.isna(m) else f"{_pm(m, s, digits)} ({n})"
        for m, s, n in zip(table[metric], table[f"{metric}_std"], table["n"], strict=True)])
    order = list(dict.fromkeys(label))  # best method first, as aggregate() sorted them
    matrix = cells.pivot_table(index=rows, columns="label", values="cell", aggfunc="first", sort=True)
    matrix = matrix.reindex(columns=[c for c in order if c in matrix.columns]).fillna("").reset_index()
    matrix.columns.name = None
    if fmt == "csv":
        return matrix.to_csv(index=False)
    if fmt == "markdown":
        return f"{metric}, mean ± std (n seeds)\n\n" + _markdown(matrix)
    with pd.option_context("display.max_columns", None, "display.width", 250):
        return f"{metric}, mean ± std (n seeds)\n" + matrix.to_string(index=False)
