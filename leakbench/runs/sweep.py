"""Grids of runs: expand, skip what the leaderboard already holds, keep going past failures.

A sweep is a product of axes (methods x maskers x leakages x seeds x knobs). Every cell is
planned first (``plan_run``) so its ``config_hash`` is known before anything trains: cells
whose hash is already a leaderboard row are skipped, cells that cannot be planned (an
impossible option) are reported, a cell with an unfinished run record (stopped, killed,
failed) continues it, and the others run through an executor plugin (``local``: one after
another in this process; ``processes:N``; ``ray``), each cell by the same ``CellTask``. A
failed run costs only its own row; the sweep reports every failure at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leakbench.errors import LeakbenchError
from leakbench.registry import Registry, parse_spec
from leakbench.types import RUN_SETTINGS, CellOutcome, Executor, RunConfig, _coerce

# RunConfig fields a grid may vary; other fields are fixed settings for every cell.
AXES = ("dataset", "leakage", "method", "masker", "backbone", "recipe", "epochs", "batch_size", "lr", "seed",
        "strength", "reliability", "leak_stage", "eval_split")
PLURALS = {f"{a}s": a for a in AXES} | {"lambda_rs": "lambda_r"}
SHORTHAND_OPTIONS = ("lambda_r",)  # plugin options accepted at the top level of a sweep file


@dataclass
class Grid:
    """Axes (lists of values per RunConfig field), plugin options to vary, fixed settings."""

    axes: dict[str, list[Any]] = field(default_factory=dict)
    options: dict[str, list[Any]] = field(default_factory=dict)  # e.g. {"lambda_r": [1, 10, 100]}
    settings: dict[str, Any] = field(default_factory=dict)

    def merged(self, other: Grid) -> Grid:
        """``other`` overrides this grid axis by axis (command-line flags over a file)."""
        return Grid({**self.axes, **other.axes}, {**self.options, **other.options},
                    {**self.settings, **other.settings})


def load_toml(path: Path) -> Grid:
    """Read a sweep file: lists are axes, scalars are fixed, ``[options]`` holds plugin options.

    Example::

        method = ["naive", "met", "oracle"]
        seed = [0, 1, 2]
        reliability = [1.0, 0.9, 0.7, 0.5]
        epochs = 5
        [options]
        lambda_r = [1, 10, 100]
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise LeakbenchError("reading sweep files on Python 3.10 needs tomli: pip install tomli") from None
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise LeakbenchError(f"cannot read sweep file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LeakbenchError(f"sweep file {path} is not valid TOML: {exc}") from None
    raw = raw.get("sweep", raw)
    if not isinstance(raw, dict):
        raise LeakbenchError(f"sweep file {path}: [sweep] must be a table of key = value(s)")
    grid = Grid()
    for key, value in raw.items():
        if key == "options":
            if not isinstance(value, dict):
                raise LeakbenchError(f"sweep file {path}: [options] must be a table of option = [values]")
            grid.options.update({k: _listed(v) for k, v in value.items()})
            continue
        name = PLURALS.get(key, key)
        if name in AXES:
            grid.axes[name] = _listed(value)
        elif name in SHORTHAND_OPTIONS:
            grid.options[name] = _listed(value)
        elif name in RUN_SETTINGS:
            if isinstance(value, (list, dict)):
                raise LeakbenchError(f"sweep file {path}: '{key}' is a fixed setting and takes one value")
            grid.settings[name] = _setting(name, value)
        else:
            raise LeakbenchError(f"sweep file {path}: unknown key '{key}'; use {', '.join(AXES + RUN_SETTINGS)}, "
                                 "lambda_r, or put plugin options under [options]")
    return grid


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def split_values(text: str) -> list[str]:
    """``"1,10,100"`` -> ["1", "10", "100"] (for numeric flags; plugin specs repeat the flag)."""
    return [v.strip() for v in text.split(",") if v.strip()]


@dataclass
class Cell:
    """One configuration of the grid and what became of it."""

    config: RunConfig
    label: str
    config_hash: str | None = None
    status: str = "pending"  # pending | skipped | duplicate | running | invalid | done | failed
    error: str = ""
    metrics: dict[str, Any] | None = None
    resume: str = ""  # the run id of an unfinished run record of this cell, continued instead of started over


def with_option(spec: str, key: str, value: Any) -> str:
    """``spec`` with option ``key`` set to ``value`` (replacing any earlier value)."""
    name, options = parse_spec(spec)
    options[key] = _text(value)
    return name + ":" + ",".join(f"{k}={v}" for k, v in options.items())


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return str(value)


def expand(grid: Grid, registry: Registry) -> list[Cell]:
    """Every combination of the axes, with plugin options applied to whichever of the
    method or masker has them. A knob that does not apply leaves the cell unchanged (naive
    has no masker to vary); such repeats are left out here, so one grid can vary the masker
    of MET beside methods without one. Different spellings of one experiment are caught
    later, by config hash, and reported as duplicates."""
    axes = {k: v for k, v in grid.axes.items() if v}
    if not axes.get("method"):
        raise LeakbenchError("a sweep needs at least one method (--method NAME, repeatable, or method = [...])")
    names = list(axes)
    option_names = list(grid.options)
    cells: list[Cell] = []
    seen: set[str] = set()
    for values in itertools.product(*(axes[n] for n in names)):
        base = dict(zip(names, values, strict=True))
        base["masker"] = _masker_for(str(base["method"]), base.get("masker"), registry)
        for option_values in itertools.product(*(grid.options[o] for o in option_names)):
            chosen = dict(base)
            for key, value in zip(option_names, option_values, strict=True):
                target = _owner(chosen, key, registry)
                if target is not None:
                    chosen[target] = with_option(chosen[target], key, value)
            config = RunConfig(**{k: _coerce_axis(k, v) for k, v in chosen.items()}, **grid.settings)
            if repr(config) not in seen:
                seen.add(repr(config))
                cells.append(Cell(config, _label(config)))
    return cells


def _coerce_axis(key: str, value: Any) -> Any:
    """A grid value typed as the RunConfig field (``seed = 1.5`` is refused, not truncated)."""
    if value is None:
        return None
    return _coerce(_text(value), typing.get_type_hints(RunConfig)[key], f"sweep value of {key}")


def _setting(name: str, value: Any) -> Any:
    if name.endswith(("_dir", "_root")):
        return Path(_coerce_axis(name, value))
    return _coerce_axis(name, value)


def _masker_for(method_spec: str, masker: Any, registry: Registry) -> str | None:
    """The masker axis applies to methods that train against a masker they may choose;
    the others keep their own (none, or e.g. oracle's oracle masker)."""
    if masker is None:
        return None
    name, _ = parse_spec(method_spec)
    methods = registry.all("methods")
    if name not in methods:
        return str(masker)  # plan_run reports the unknown method for this cell
    cls = methods[name].cls
    masker_name, _ = parse_spec(str(masker))
    if not cls.uses_masker or (cls.only_maskers and masker_name not in cls.only_maskers):
        return None
    return str(masker)


def _owner(chosen: dict[str, Any], option: str, registry: Registry) -> str | None:
    """Which of the cell's plugins (``"method"`` or ``"masker"``) has ``option``, or None.

    A cell without a masker is resolved to its method's default masker first, so
    ``lambda_r`` reaches MET's default casme masker."""
    for kind in ("method", "masker"):
        spec = chosen.get(kind)
        if kind == "masker" and spec is None:
            method_name, _ = parse_spec(str(chosen["method"]))
            method = registry.all("methods").get(method_name)
            if method is None or not method.cls.uses_masker:
                continue
            spec = method.cls.default_masker
        if spec is None:
            continue
        name, _ = parse_spec(str(spec))
        info = registry.all(f"{kind}s").get(name)
        if info is not None and any(f.name == option for f in info.cls.options()):
            chosen[kind] = str(spec)
            return kind
    return None


def _label(config: RunConfig) -> str:
    parts = [config.method]
    if config.masker:
        parts.append(f"masker {config.masker}")
    parts += [config.dataset, config.leakage, f"seed {config.seed}"]
    for knob, default in (("strength", 1.0), ("reliability", 1.0)):
        if getattr(config, knob) != default:
            parts.append(f"{knob} {getattr(config, knob)}")
    if config.epochs is not None:
        parts.append(f"{config.epochs} epochs")
    return ", ".join(parts)


def existing_hashes(leaderboard_dir: Path) -> set[str]:
    """Config hashes of every row already in the leaderboards under ``leaderboard_dir``."""
    from leakbench.results import leaderboard as lb
    frame = lb.read(lb.result_files(leaderboard_dir))
    if frame.empty:
        return set()
    return set(frame["config_hash"].dropna().astype(str))


def plan_cells(cells: Iterable[Cell], registry: Registry, leaderboard_dir: Path) -> list[Cell]:
    """Hash every cell; mark invalid, duplicate and already-run cells, and find the unfinished
    run record (stopped, killed, failed) a pending cell continues. Nothing trains."""
    from leakbench.engine.session import plan_run
    from leakbench.runs.pipeline import config_hash
    from leakbench.runs.run_record import by_config_hash

    done = existing_hashes(leaderboard_dir)
    seen: set[str] = set()
    saved: dict[Path, tuple[dict[str, Any], set[str]]] = {}  # save dir -> (hash -> record to resume, running)
    out = []
    for cell in cells:
        try:
            cell.config_hash = config_hash(cell.config, plan_run(cell.config, registry))
        except LeakbenchError as exc:
            cell.status, cell.error = "invalid", str(exc)
        else:
            if cell.config_hash in seen:
                cell.status = "duplicate"
            elif cell.config_hash in done:
                cell.status = "skipped"
            elif cell.config.save_dir is not None:
                folder = Path(cell.config.save_dir)
                if folder not in saved:
                    saved[folder] = by_config_hash(folder)
                to_resume, running = saved[folder]
                if cell.config_hash in running:
                    cell.status, cell.error = "running", "another process is running this cell now"
                elif cell.config_hash in to_resume:
                    record = to_resume[cell.config_hash]
                    cell.resume = record.run_id
                    cell.label += f" (resumes run {record.run_id} from epoch " \
                                  f"{record.state().get('checkpoint_epoch', 0)})"
            seen.add(cell.config_hash)
        out.append(cell)
    return out


@dataclass
class CellTask:
    """Runs one cell, wherever an executor puts it: the only copy of the per-cell logic.

    A sweep is planned once, but its cells start minutes or hours later, and another sweep
    over the same cells (a second terminal, a second machine on the same save dir, a stray
    rerun) may have got there first. So just before it trains, the task claims the cell (an
    exclusive lock on ``SAVE_DIR/.claims/<config_hash>.lock``, released when it ends or its
    process dies) and looks again: a cell another process holds is ``running`` elsewhere, a
    cell whose row has landed since is ``skipped``, and a cell with an unfinished record
    continues it (a retried Ray task finds the record its killed attempt left in the shared
    save dir). Two sweeps over one grid thus share the work instead of doing it twice. It
    turns any error into a ``failed`` outcome with one line (a non-finite loss included: the
    run has already marked its record failed), and a stop signal into an ``interrupted`` one.
    With ``write`` the run appends its own row (the local executor: it *is* the sweep's
    process); without, the row comes back in the outcome and the sweep appends it (one writer
    per sweep, see :func:`run_cells`).

    It pickles without its registry and runner; in a worker process the registry is built
    once from the installed entry points (``LEAKBENCH_LOAD_PLUGINS`` applies there too).
    """

    checkpoint_every: int | None = None
    write: bool = True
    registry: Registry | None = field(default=None, repr=False, compare=False)
    runner: Callable[..., Any] | None = field(default=None, repr=False, compare=False)  # tests: instead of run_one

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "registry": None, "runner": None}

    def __call__(self, cell: Cell) -> CellOutcome:
        from leakbench.runs.interrupts import RunInterrupted
        from leakbench.runs.run_record import one_line

        registry = self.registry or _worker_registry()
        every = {} if self.checkpoint_every is None else {"checkpoint_every": self.checkpoint_every}
        write = {} if self.write else {"write": False}
        try:
            with _claim(cell) as held:
                if not held:
                    return CellOutcome("running", "another process is running this cell now")
                return self._run_claimed(cell, registry, every, write)
        except RunInterrupted as exc:
            return CellOutcome("interrupted", exc.message, signum=exc.signum)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one bad cell must not stop the grid
            return CellOutcome("failed", one_line(exc))

    def _run_claimed(self, cell: Cell, registry: Registry, every: dict[str, Any], write: dict[str, Any]) \
            -> CellOutcome:
        from leakbench.runs.pipeline import run_one
        from leakbench.runs.resume import resume_run
        from leakbench.runs.run_record import by_config_hash

        if cell.config_hash and cell.config_hash in existing_hashes(cell.config.leaderboard_dir):
            return CellOutcome("skipped", "another process finished this cell after the sweep was planned")
        resume = ""  # looked up now, not taken from planning: a record may have been left since
        if cell.config.save_dir is not None and cell.config_hash:
            to_resume, running = by_config_hash(Path(cell.config.save_dir))
            if cell.config_hash in running:
                return CellOutcome("running", "another process is running this cell now")
            if cell.config_hash in to_resume:
                resume = to_resume[cell.config_hash].run_id
        if resume:
            result = resume_run(resume, Path(cell.config.save_dir), registry, config=cell.config, **every, **write)
        else:
            result = (self.runner or run_one)(cell.config, registry, **write, **every)
        return CellOutcome("done", metrics=result.metrics, row=result.row, leaderboard_path=result.leaderboard_path)


@contextlib.contextmanager
def _claim(cell: Cell) -> Iterator[bool]:
    """Hold the cell's claim for as long as it runs: True if this process got it, False if
    another process holds it. A flock, so a killed holder releases it; on NFS it is only as
    good as the mount's lock support (see :func:`run_cells`). Without a save dir, no claim."""
    from filelock import FileLock, Timeout

    if cell.config.save_dir is None or not cell.config_hash:
        yield True
        return
    folder = Path(cell.config.save_dir) / ".claims"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{cell.config_hash}.lock"), timeout=0)
        lock.acquire()
    except Timeout:
        yield False
        return
    except OSError as exc:
        raise LeakbenchError(f"cannot write {folder}: {exc.strerror or exc}; choose a writable --save-dir") from None
    try:
        yield True
    finally:
        lock.release()


_REGISTRY: Registry | None = None


def _worker_registry() -> Registry:
    """One registry per worker process (building one loads every entry point)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def run_cells(
    cells: list[Cell],
    registry: Registry,
    echo: Callable[[str], None] = print,
    runner: Callable[..., Any] | None = None,
    checkpoint_every: int | None = None,
    executor: Executor | str = "local",
) -> list[Cell]:
    """Run the pending cells through ``executor`` (a plugin instance or spec; ``local``: one
    after another in this process), one line per finished cell; a failure is recorded and the
    sweep goes on. SIGTERM or SIGINT stops the sweep: no further cell starts, running ones stop
    at their next step boundary (resumable), the rows written stay, and RunInterrupted says how
    to go on.

    Rows land exactly once through one writer per sweep: a local cell appends its own row (in
    this process, as ``leakbench run`` does); cells in worker processes or Ray tasks send their
    row back and this process appends it. Either way the append is the leaderboard's locked
    write-and-rename, so other sweeps and runs on this host are safe too. Workers therefore
    never need a lock that works across machines: flock over NFS is only as good as the
    mount's lock support (``nolock`` or a local-lock mount makes it per host). They only
    write their own run folder, which no one else writes.
    """
    from leakbench.runs.interrupts import graceful_stop

    if isinstance(executor, str):
        executor = registry.create("executors", executor)
    pending = [c for c in cells if c.status == "pending"]
    if not pending:
        return cells
    local = executor.in_process
    task = CellTask(checkpoint_every, write=local, registry=registry if local else None,
                    runner=runner if local else None)
    if not local:
        from leakbench.runs.pipeline import check_writable

        for config in {(str(c.config.leaderboard_dir), str(c.config.save_dir)): c.config for c in pending}.values():
            check_writable(config)  # before any worker starts: the rows come back here
    finished: list[int] = []
    stopped: list[tuple[int, CellOutcome]] = []

    def report(index: int, outcome: CellOutcome) -> None:
        cell = pending[index]
        finished.append(index)
        where = f"[{len(finished)}/{len(pending)}]"
        if outcome.status == "done" and outcome.leaderboard_path is None and outcome.row is not None:
            try:
                outcome.leaderboard_path = _append(cell, outcome.row)
            except LeakbenchError as exc:
                outcome = CellOutcome("failed", f"run {outcome.row.get('run_id')} finished, but its row was not "
                                                f"written: {exc}")
        if outcome.status == "done":
            cell.status, cell.metrics = "done", outcome.metrics
            metrics = outcome.metrics or {}
            acc, masked = metrics.get("acc_clean"), metrics.get("acc_clean_masked")
            shown = f"acc_clean {acc:.2f}" + (f", masked {masked:.2f}" if masked is not None else "")
            echo(f"{where} {cell.label}: {shown}, run {outcome.row['run_id'] if outcome.row else '?'}")
        elif outcome.status == "interrupted":
            stopped.append((index, outcome))
            echo(f"{where} STOPPED {cell.label}: {outcome.error}")
        else:
            cell.status, cell.error = outcome.status, outcome.error
            echo(f"{where} {'FAILED' if outcome.status == 'failed' else outcome.status} {cell.label}: {cell.error}")

    with graceful_stop() as stop:
        executor.run(pending, task, report, stop)
        signum = stop.signum
    if stopped or signum is not None:
        raise _stopped(pending, finished, stopped, signum)
    reported = set(finished)
    # an executor that returned early without a signal: say so, never drop a cell silently
    for cell in (c for i, c in enumerate(pending) if i not in reported):
        cell.status, cell.error = "failed", f"executor '{executor.name}' returned without running it"
    return cells


def _append(cell: Cell, row: dict[str, Any]) -> Path:
    """The driver's append of a row a worker sent back, and the run record told where it went."""
    from leakbench.results.leaderboard import append_row, leaderboard_path
    from leakbench.runs.run_record import RunRecord

    path = leaderboard_path(cell.config.leaderboard_dir, parse_spec(str(row.get("dataset") or cell.config.dataset))[0])
    append_row(path, row)
    if cell.config.save_dir is not None:
        try:
            RunRecord.open(Path(cell.config.save_dir), str(row["run_id"])).update(leaderboard=str(path))
        except (LeakbenchError, OSError):
            pass  # the row is what counts; a record on a folder this host cannot see only lacks the path
    return path


def _stopped(pending: list[Cell], finished: list[int], stopped: list[tuple[int, CellOutcome]],
             signum: int | None) -> BaseException:
    """The one line a stopped sweep ends with (each stopped cell's resume line is above it)."""
    import signal

    from leakbench.runs.interrupts import RunInterrupted

    signum = signum or (stopped[0][1].signum if stopped else 0) or int(signal.SIGINT)
    name, total = signal.Signals(signum).name, len(pending)
    if len(stopped) == 1:
        where = f"in cell {stopped[0][0] + 1} of {total}"
    elif stopped:
        where = f"with {len(stopped)} cells running"
    else:
        done = set(finished)
        first = next((i for i in range(total) if i not in done), total)
        where = f"before cell {first + 1} of {total}" if done == set(range(first)) else \
            f"after {len(done)} of {total} cells"
    resumes = " (finished cells are skipped, stopped ones resume)" if stopped else " (finished cells are skipped)"
    return RunInterrupted(f"sweep stopped by {name} {where}; rerun the same sweep to go on{resumes}", signum)


def summary(cells: list[Cell]) -> list[str]:
    """Counts per status, then one line per invalid or failed cell."""
    counts = {s: sum(c.status == s for c in cells)
              for s in ("pending", "done", "skipped", "duplicate", "running", "invalid", "failed")}
    to_run = f"{counts['pending']} to run, " if counts["pending"] else ""
    running = f"{counts['running']} running elsewhere, " if counts["running"] else ""
    lines = [f"sweep: {len(cells)} cells: {to_run}{counts['done']} ran, {counts['skipped']} already in the "
             f"leaderboard, {counts['duplicate']} duplicates, {running}{counts['invalid']} invalid, "
             f"{counts['failed']} failed"]
    for cell in cells:
        if cell.status in ("invalid", "failed", "running"):
            lines.append(f"  {cell.status}: {cell.label}: {cell.error}")
    return lines

