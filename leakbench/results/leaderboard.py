"""Leaderboard CSVs: one fixed schema, appended atomically under a file lock."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from leakbench.engine.evaluation import METRICS
from leakbench.errors import LeakbenchError
from leakbench.types import RUN_SETTINGS

# The schema, defined once. Pipeline order first, then metrics, then what makes a row reproducible.
# clean_images: how many leak-free images a clean-data method used (empty: none). epochs: the run's
# total, the sum over the method's stages; stages: how they split ("identify:3+upweighted:12").
# eval_split is a key: a row scored on the tune split is never averaged with one scored on test.
KEY_COLUMNS = ("dataset", "leakage", "strength", "reliability", "leak_stage", "masker", "method",
               "supervision", "backbone", "recipe", "epochs", "eval_split")
COLUMNS = (
    "run_id", "timestamp", "dataset", "leakage", "strength", "reliability", "leak_stage", "masker", "method",
    "supervision", "clean_images", "backbone", "recipe", "epochs", "stages", "batch_size", "lr", "seed", "eval_split",
    *METRICS,
    "train_seconds", "images_per_second", "device", "precision", "deterministic", "backbone_config",
    "dataset_notes", "torch_version", "timm_version", "leakbench_version", "providers", "git_commit",
    # experiment_id: the experiment's identity, everything but the seed (rows of one experiment
    # are its seeds); config_hash: the same plus the seed (one run, for skipping reruns).
    "experiment_id", "config_hash", "config_json",
)
# One leaderboard group per experiment: the visible settings plus experiment_id (which already
# determines them; they are here so hand-made rows without a config still group by what they show).
IDENTITY_COLUMNS = (*KEY_COLUMNS, "batch_size", "lr", "experiment_id")
# What --group-by may coarsen on: every column but the metrics and what is unique to one run.
PER_RUN_COLUMNS = ("run_id", "timestamp", "train_seconds", "images_per_second", "config_hash", "config_json")
GROUPABLE_COLUMNS = tuple(c for c in COLUMNS if c not in METRICS and c not in PER_RUN_COLUMNS)
# config_json keys that say where or how a run ran, not what it was: left out of the identity of
# rows written before experiment_id existed.
RUN_ONLY_KEYS = ("seed", *RUN_SETTINGS)


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
    """Under the lock: the old content plus the row, written to a temp file and renamed over.
    A file in an older layout of the schema (a subset of its columns) is upgraded on the way."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing:
        header = next(csv.reader(io.StringIO(existing)), [])
        if tuple(header) != columns:
            existing = _upgraded(path, existing, header, columns)
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


def _anchors(columns: tuple[str, ...]) -> set[str]:
    """Columns an older layout of ``columns`` must still have to count as one (not any subset)."""
    return {"run_id", "config_hash"} & set(columns) or {columns[0]}


def _older_layout(header: list[str], columns: tuple[str, ...]) -> bool:
    """An earlier version of the schema: only known columns, each once, the anchors among them."""
    names = set(header)
    return bool(header) and len(names) == len(header) and names <= set(columns) and _anchors(columns) <= names


def _upgraded(path: Path, existing: str, header: list[str], columns: tuple[str, ...]) -> str:
    """``existing`` rewritten under the current header, new columns empty; a foreign file is refused."""
    if not _older_layout(header, columns):
        unknown = [c for c in header if c not in columns]
        why = (f"columns {', '.join(unknown)} are not in the leaderboard schema" if unknown
               else f"it lacks {', '.join(sorted(_anchors(columns) - set(header)))} or repeats a column")
        raise LeakbenchError(f"{path} has a different column layout ({why}); move it aside and run again")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for number, old in enumerate(csv.DictReader(io.StringIO(existing)), start=2):
        if None in old:
            raise LeakbenchError(f"{path} line {number} has more cells than its header; fix or move the file aside")
        writer.writerow({c: "" if v is None else v for c, v in old.items()})
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""  # "does not apply" stays empty, never zero
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def result_files(directory: Path, dataset: str | None = None) -> list[Path]:
    """Leaderboard CSVs in ``directory`` that use the run schema or an older layout of it (skips
    e.g. throughput.csv)."""
    directory = Path(directory)
    candidates = [leaderboard_path(directory, dataset)] if dataset else sorted(directory.glob("*.csv"))
    found = []
    for path in candidates:
        if path.is_file():
            with path.open(encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
                if tuple(header) == COLUMNS or _older_layout(header, COLUMNS):
                    found.append(path)
    return found


def read(paths: Iterable[Path]):
    """All rows of the given CSVs as one DataFrame with every column of the schema (empty cells,
    and columns an older file lacks, are NaN)."""
    import pandas as pd

    text = {c: str for c in ("run_id", "leakage", "masker", "eval_split", "stages", "git_commit", "experiment_id",
                             "config_hash", "config_json")}
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path, dtype=text)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise LeakbenchError(f"cannot read leaderboard {path}: {exc}") from None
        frames.append(frame.reindex(columns=[*COLUMNS, *(c for c in frame.columns if c not in COLUMNS)]))
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)


def _text(series):
    """Cells as the strings they were written as (15.0 and 15 alike read as "15"), NaN as ""."""
    return series.map(_word).astype(object)


def _word(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _config(cell) -> dict[str, Any]:
    """A row's config_json, its recipe reduced to what shapes training (``Recipe.identity``: fields
    added since the row was written take their defaults, unused milestones drop out)."""
    from leakbench.types import Recipe

    try:
        config = json.loads(cell) if isinstance(cell, str) and cell else {}
    except json.JSONDecodeError:
        return {}
    if not isinstance(config, dict):
        return {}
    recipe = config.get("recipe")
    if isinstance(recipe, dict):
        try:
            recipe = Recipe(**recipe).identity()
        except TypeError:  # a field this version no longer has: compare it as written
            recipe = {k: v for k, v in recipe.items() if k != "milestones" or recipe.get("schedule") == "step"}
        config["recipe"] = json.loads(json.dumps(recipe))  # tuples as lists, as written
    return config


def _fallback_id(cell) -> str:
    """Identity of a row written before experiment_id existed: its config without RUN_ONLY_KEYS."""
    config = {k: v for k, v in _config(cell).items() if k not in RUN_ONLY_KEYS}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _settings(cell) -> dict[str, str]:
    """Identifying settings a row only records inside config_json: recipe fields such as momentum
    or weight_decay, and any setting without a column of its own."""
    config = _config(cell)
    recipe = config.pop("recipe", None)
    out = {k: _word(v) for k, v in config.items() if k not in RUN_ONLY_KEYS and k not in COLUMNS}
    for k, v in (recipe if isinstance(recipe, dict) else {}).items():
        if k != "name" and k not in COLUMNS:
            out[k if k not in out else f"recipe.{k}"] = _word(v)
    return out


def identify(frame):
    """``frame`` with its identity columns as text, ``eval_split`` "test" where empty (rows from
    before the column), and ``experiment_id`` filled for old rows from their config."""
    frame = frame.assign(**{c: _text(frame[c]) for c in IDENTITY_COLUMNS})
    fallback = [_fallback_id(cell) for cell in frame["config_json"]]
    return frame.assign(eval_split=frame["eval_split"].replace("", "test"),
                        experiment_id=[e or f for e, f in zip(frame["experiment_id"], fallback, strict=True)])


def latest_runs(frame):
    """One row per (experiment, seed): a run repeated (same experiment and seed) is counted once,
    the latest row kept (by ``timestamp``; equal or missing timestamps: the later in file order).
    Rows without a seed are all kept. Returns the rows in file order and how many were dropped.
    ``frame`` must have gone through ``identify``."""
    import pandas as pd

    when = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    order = frame.assign(_when=when, _pos=range(len(frame))).sort_values(
        ["_when", "_pos"], na_position="first", kind="stable")
    seed = _text(order["seed"])
    repeated = order.assign(seed=seed).duplicated([*IDENTITY_COLUMNS, "seed"], keep="last") & (seed != "")
    kept = order[~repeated].sort_values("_pos", kind="stable").drop(columns=["_when", "_pos"])
    return kept, int(repeated.sum())


def aggregate(frame, dataset: str | None = None, leakage: str | None = None,
              group_by: tuple[str, ...] | list[str] | None = None):
    """Mean, std and n over seeds for each experiment, best clean accuracy first.

    A group is one experiment: rows with the same ``experiment_id`` (every resolved setting but
    the seed; for rows from before that column, a hash of their config without RUN_ONLY_KEYS) and
    the same visible settings, so runs that differ only in e.g. ``lr`` are never averaged. The
    table carries the identifying settings that only live in config_json (recipe fields such as
    momentum) when they differ between groups. ``group_by`` coarsens on purpose: exactly those
    columns (GROUPABLE_COLUMNS), averaging over everything else.

    The same (experiment, seed) appearing twice is counted once, the latest row kept
    (``latest_runs``); ``table.attrs["repeats_dropped"]`` says how many rows that left out.
    """
    import pandas as pd

    if group_by is not None:
        group_by = tuple(group_by)
        unknown = [c for c in group_by if c not in GROUPABLE_COLUMNS]
        if unknown or not group_by:
            raise LeakbenchError(f"cannot group by {', '.join(map(repr, unknown)) or 'nothing'}; choose columns "
                                 f"from {', '.join(GROUPABLE_COLUMNS)}")
    for column, wanted in (("dataset", dataset), ("leakage", leakage)):
        if wanted:
            frame = frame[frame[column].astype(str).str.split(":").str[0] == wanted.split(":")[0]]
    if frame.empty:
        return frame
    frame, dropped = latest_runs(identify(frame))
    metrics = [m for m in METRICS if m in frame]
    if group_by:
        keys, extras = list(group_by), []
        frame = frame.assign(**{c: _text(frame[c]) for c in keys})
    else:
        keys = list(IDENTITY_COLUMNS)
        settings = pd.DataFrame([_settings(cell) for cell in frame["config_json"]], index=frame.index)
        extras = [c for c in settings.columns if c not in frame.columns]
        frame = frame.join(settings[extras].fillna(""))
    grouped = frame.groupby(keys, sort=False)
    mean, std = grouped[metrics].mean(), grouped[metrics].std(ddof=1)
    table = mean.join(std.add_suffix("_std"))
    table["n"] = grouped.size()
    if extras:  # constant within an experiment; kept only where they tell experiments apart
        first = grouped[extras].first()
        table = table.join(first[[c for c in extras if first[c].nunique() > 1]])
    table = table.reset_index().sort_values("acc_clean", ascending=False, kind="stable").reset_index(drop=True)
    table.attrs.update(repeats_dropped=dropped, group_by=tuple(group_by or ()))
    return table


def _id_columns(table) -> list[str]:
    """The columns of an aggregated table that say which group a row is (not metrics, not n)."""
    return [c for c in table.columns if c != "n" and c not in METRICS and not c.endswith("_std")]


def _varies(series) -> bool:
    return len(set(series.astype(str)) - {""}) > 1


def render(table, fmt: str = "table") -> str:
    """Terminal table, markdown or CSV of an aggregated leaderboard: ``mean ± std``. Besides the
    usual columns it shows every identifying setting that differs between the groups shown (lr,
    batch_size, recipe fields...), and experiment_id when two groups would still look alike."""
    import pandas as pd

    if table.empty:
        return "no runs match"
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.4g")
    ids = _id_columns(table)
    group_by = table.attrs.get("group_by") or ()
    if group_by:  # the user chose the groups: show exactly those columns
        shown = [c for c in group_by if c in table]
    else:
        usual = ["dataset", "leakage", "method", "masker", "supervision", "backbone", "recipe", "epochs"]
        shown = [c for c in usual if c in table]
        knobs = [c for c in ("strength", "reliability") if c in table]
        if any(_varies(table[c]) or (pd.to_numeric(table[c], errors="coerce") != 1).any() for c in knobs):
            shown[2:2] = knobs
        shown += [c for c in ids if c not in shown and c != "experiment_id" and _varies(table[c])]
        if "experiment_id" in table and table[shown].astype(str).duplicated().any():
            shown.append("experiment_id")
    out = table[[*shown, "n"]].copy()
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
    masker), one row per setting that varies among the runs, cells ``mean ± std (n)``. Where two
    experiments of one method would share a cell (they differ only in e.g. lr), the setting that
    tells them apart becomes a row too (experiment_id as a last resort)."""
    import pandas as pd

    if table.empty:
        return "no runs match"
    if metric not in METRICS:
        raise LeakbenchError(f"unknown metric '{metric}'; choose from {', '.join(METRICS)}")
    defaults = default_maskers or {}
    ids = _id_columns(table)
    if "method" in table:
        maskers = table["masker"] if "masker" in table else [""] * len(table)
        label = [m if k in ("", "none", defaults.get(m)) else f"{m} + {k}"
                 for m, k in zip(table["method"], maskers, strict=True)]
        ids = [c for c in ids if c not in ("method", "masker", "supervision")]
    else:  # grouped without methods (--group-by leakage): one column, the metric
        label = [metric] * len(table)
    settings = [c for c in KEY_COLUMNS if c in ids]
    for column in settings:  # a blank means "does not apply" (clean runs have no leak stage): not its own row
        values = set(table[column]) - {""}
        if len(values) == 1:
            table = table.assign(**{column: table[column].replace("", values.pop())})
    table = table.assign(label=label)
    rows = [c for c in settings if table[c].nunique() > 1]
    others = [c for c in ids if c not in settings and c != "experiment_id"] + [c for c in ids if c == "experiment_id"]
    for column in others:  # until every (row, method) cell holds one group
        clash = table.duplicated(["label", *rows], keep=False)
        if not clash.any():
            break
        if table[clash].groupby(["label", *rows])[column].nunique().gt(1).any():
            rows.append(column)
    if not rows:
        rows = ["dataset"] if "dataset" in table else ["runs"]
        table = table if "dataset" in table else table.assign(runs="all")
    digits = 3 if metric in ("leak_following", "leak_mask_share", "leak_coverage") else 2
    cells = table.assign(cell=[
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
