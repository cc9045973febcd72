"""``leakbench show``, ``plot`` and ``sweep``: thin click wrappers over reports and sweep."""

from __future__ import annotations

from pathlib import Path

import click

from leakbench.cli import common
from leakbench.errors import LeakbenchError


@click.command()
@click.option("--dataset", default=None, help="Dataset plugin (name:key=value); with --run, the run's own.")
@click.option("--leakage", default=None, help="Leakage plugin (name:key=value); with --run, the run's own.")
@click.option("--run", "run_id", default=None,
              help="Run id (or checkpoint folder) of a finished run: adds its mask overlay, masked images and "
                   "predictions.")
@click.option("--per-class", type=click.IntRange(1, 20), default=2, show_default=True, help="Images per class.")
@click.option("--classes", "max_classes", type=click.IntRange(1, 50), default=10, show_default=True,
              help="Show at most this many classes (the first ones).")
@click.option("--leaderboard-dir", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True,
              help="Where to look the run up (to find where it saved its checkpoints).")
@click.option("--data-root", type=click.Path(path_type=Path), default=None, help="Where datasets live.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG to write (default: show-<run id>.png or show-<dataset>-<leakage>.png).")
def show(dataset: str | None, leakage: str | None, run_id: str | None, per_class: int, max_classes: int,
         leaderboard_dir: Path, data_root: Path | None, device: str, out: Path | None) -> None:
    """Picture a leak (and a run's masks): original | spoiled | mask overlay | masked, per class."""
    from leakbench.results import reports
    run = None
    if run_id is not None:
        run = reports.find_run(run_id, leaderboard_dir)
        for flag, given, own in (("--dataset", dataset, run.config.dataset), ("--leakage", leakage,
                                                                                run.config.leakage)):
            if given is not None and given != own:
                raise LeakbenchError(f"run {run.run_id} used {flag} {own}, not {given}; drop {flag} with --run")
        dataset, leakage = run.config.dataset, run.config.leakage
    dataset, leakage = dataset or "digits", leakage or "binary-corner"
    panels = reports.compute_panels(dataset, leakage, run, per_class, max_classes, data_root, device,
                                    common._registry())
    title = f"{dataset} / {leakage}"
    if run is not None:
        title = f"run {run.run_id}: {run.config.method} (masker {panels.masker}) on " + title
        if run.row is not None:
            size = run.row.get("mask_size_pct")
            title += f"  |  clean acc {float(run.row['acc_clean']):.1f}%" + (
                f", mask {float(size):.2f}%" if size == size and size is not None else "")
    name = f"show-{run.run_id}.png" if run is not None else f"show-{_slug(dataset)}-{_slug(leakage)}.png"
    figure = reports.show_figure(panels, out or Path(name), title)
    click.echo(f"wrote {figure.path}")


def _slug(spec: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in spec)


@click.command()
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("--leakage", default=None, help="Only this leakage (name, any options).")
@click.option("--x", "x", default=None,
              help="Draw curves over this knob instead of bars: reliability, strength, or a masker/method option "
                   "such as lambda_r.")
@click.option("--metric", "metrics", multiple=True,
              help="Metric to draw (repeatable). Default: clean, masked, spoiled accuracy and leak following for "
                   "bars; clean accuracy and leak following for curves.")
@click.option("--leaderboard-dir", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG to write (default: plot-<dataset or all>[-<x>].png).")
def plot(dataset: str | None, leakage: str | None, x: str | None, metrics: tuple[str, ...], leaderboard_dir: Path,
         out: Path | None) -> None:
    """Chart a leaderboard: bars per method (mean ± std over seeds), or curves over a knob with --x."""
    from leakbench.results import leaderboard as lb
    from leakbench.results import reports
    paths = lb.result_files(leaderboard_dir, dataset)
    if not paths:
        raise LeakbenchError(f"no leaderboard CSVs in {leaderboard_dir}" + (f" for dataset '{dataset}'" if dataset
                             else "") + "; run `leakbench run --method ...` first")
    default = f"plot-{_slug(dataset or 'all')}" + (f"-{_slug(x)}" if x else "") + ".png"
    path = reports.plot_leaderboard(lb.read(paths), out or Path(default), dataset, leakage, x, metrics,
                                    common._registry())
    click.echo(f"wrote {path}")


@click.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="TOML sweep file (lists are axes); flags below override its keys.")
@click.option("--method", "methods", multiple=True, help="Method plugin (repeatable).")
@click.option("--masker", "maskers", multiple=True,
              help="Masker plugin (repeatable); applies to methods that train against a chosen masker.")
@click.option("--dataset", "datasets", multiple=True, help="Dataset plugin (repeatable). Default: digits.")
@click.option("--leakage", "leakages", multiple=True, help="Leakage plugin (repeatable). Default: binary-corner.")
@click.option("--seeds", default=None, help="Comma-separated seeds, e.g. 0,1,2.")
@click.option("--leak-strength", "strength", default=None, help="Comma-separated strengths, e.g. 1,0.5.")
@click.option("--leak-reliability", "reliability", default=None, help="Comma-separated, e.g. 1.0,0.9,0.7,0.5.")
@click.option("--lambda-r", "lambda_r", default=None, help="Comma-separated lambda_r of maskers that have it.")
@click.option("--option", "options", multiple=True,
              help="Any masker or method option as NAME=V1,V2 (repeatable), e.g. size_pct=6,12.")
@click.option("--epochs", default=None, help="Comma-separated epoch overrides.")
@click.option("--recipe", default=None, help="Recipe for every run.")
@click.option("--backbone", default=None, help="Backbone for every run.")
@click.option("--eval-split", "eval_split", type=click.Choice(["test", "tune"]), default=None,
              help="Split every run is scored on (default test; tune for choosing settings).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto).")
@click.option("--leaderboard-dir", type=click.Path(path_type=Path), default=None,
              help="Where rows go and where finished runs are found (default: leaderboards).")
@click.option("--save-dir", type=click.Path(path_type=Path), default=None,
              help="Run records under SAVE_DIR/<run_id>/ (default: runs); a cell with an unfinished record there "
                   "resumes it.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=None, metavar="N",
              help="Each run writes its checkpoint every N epochs (default 1).")
@click.option("--executor", "executor_spec", default="local", show_default=True, metavar="SPEC",
              help="Where cells run: local (one after another here), processes:N (N worker processes; one per "
                   "GPU), ray or ray:address=auto (Ray tasks; pip install \"leakbench[ray]\"). "
                   "`leakbench list executors -v` shows their options.")
@click.option("--dry-run", is_flag=True, help="List the cells and what would happen; train nothing.")
def sweep(config_file: Path | None, methods, maskers, datasets, leakages, seeds, strength, reliability, lambda_r,
          options, epochs, recipe, backbone, eval_split, device, leaderboard_dir, save_dir, checkpoint_every,
          executor_spec: str, dry_run: bool) -> None:
    """Run a grid; skip cells already in the leaderboard, resume unfinished ones, report failures at the end."""
    from leakbench.runs import sweep as sw
    grid = sw.load_toml(config_file) if config_file else sw.Grid()
    flags = sw.Grid()
    for key, values in (("method", methods), ("masker", maskers), ("dataset", datasets), ("leakage", leakages)):
        if values:
            flags.axes[key] = list(values)
    for key, text, flag in (("seed", seeds, "--seeds"), ("strength", strength, "--leak-strength"),
                            ("reliability", reliability, "--leak-reliability"), ("epochs", epochs, "--epochs")):
        if text:
            flags.axes[key] = _numbers(text, flag)
    if recipe:
        flags.axes["recipe"] = [recipe]
    if backbone:
        flags.axes["backbone"] = [backbone]
    if eval_split:
        flags.axes["eval_split"] = [eval_split]
    if lambda_r:
        flags.options["lambda_r"] = _numbers(lambda_r, "--lambda-r")
    for item in options:
        key, eq, text = item.partition("=")
        if not eq or not key.strip() or not text.strip():
            raise LeakbenchError(f"cannot read --option '{item}'; write NAME=V1,V2")
        flags.options[key.strip().replace("-", "_")] = sw.split_values(text)
    for key, value in (("device", device), ("leaderboard_dir", leaderboard_dir), ("save_dir", save_dir)):
        if value is not None:
            flags.settings[key] = value
    grid = grid.merged(flags)
    grid.settings.setdefault("quiet", True)
    leaderboard = Path(grid.settings.get("leaderboard_dir", Path("leaderboards")))

    registry = common._registry()
    executor = registry.create("executors", executor_spec)  # a bad name or a missing Ray: one line, nothing planned
    cells = sw.plan_cells(sw.expand(grid, registry), registry, leaderboard)
    if dry_run:
        for cell in cells:
            if cell.status != "duplicate":  # counted in the summary; listing them only repeats a line
                click.echo(f"{cell.status:<9} {cell.label}" + (f": {cell.error}" if cell.error else ""))
        click.echo("\n".join(sw.summary(cells)))
        return
    pending = sum(c.status == "pending" for c in cells)
    resumes = sum(bool(c.resume) for c in cells if c.status == "pending")
    click.echo(f"sweep: {pending} to run" + (f" ({resumes} resuming a stopped run)" if resumes else "") +
               f", {len(cells) - pending} already done, duplicate or invalid; rows to {leaderboard}")
    sw.run_cells(cells, registry, echo=click.echo, checkpoint_every=checkpoint_every, executor=executor)
    lines = sw.summary(cells)
    click.echo("\n".join(lines))
    bad = sum(c.status in ("invalid", "failed") for c in cells)  # "running" elsewhere is not a failure
    if bad:
        raise LeakbenchError(f"{bad} sweep cell(s) failed or were invalid (listed above); the other rows are written")


def _numbers(text: str, flag: str) -> list[float | int]:
    from leakbench.runs.sweep import split_values

    out: list[float | int] = []
    for value in split_values(text):
        try:
            number = float(value)
        except ValueError:
            raise LeakbenchError(f"{flag} expects comma-separated numbers, got '{value}'") from None
        out.append(int(number) if number.is_integer() and "." not in value else number)
    return out
