"""The ``leakbench`` command: thin wrappers over library functions."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from leakbench.cli import common
from leakbench.cli import data as data_commands
from leakbench.cli import reports as report_commands
from leakbench.cli import runs as run_commands
from leakbench.cli.common import print_result
from leakbench.errors import LeakbenchError, PluginError
from leakbench.runs.interrupts import RunInterrupted

KIND_CHOICES = ("datasets", "leakages", "maskers", "methods", "executors")


class LeakbenchGroup(click.Group):
    """Turns user errors into one ``Error: ...`` line; LEAKBENCH_DEBUG=1 shows the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LeakbenchError as exc:
            if os.environ.get("LEAKBENCH_DEBUG"):
                raise
            hint = " (LEAKBENCH_DEBUG=1 shows the traceback)" if isinstance(exc, PluginError) else ""
            raise click.ClickException(f"{exc}{hint}") from None
        except RunInterrupted as exc:  # a signal stopped a run at a step boundary: how to go on, exit 128+signal
            click.echo(exc.message, err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: this run wrote no leaderboard row", err=True)
            ctx.exit(130)


@click.group(cls=LeakbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leakbench")
def cli() -> None:
    """Leakage robustness benchmarks: dataset -> leakage -> masker -> method -> leaderboard."""


@cli.command()
@click.option("--dataset", default="digits", show_default=True, help="Dataset plugin, with options as name:key=value.")
@click.option("--leakage", default="binary-corner", show_default=True, help="Leakage plugin (name:key=value,...).")
@click.option("--leak-stage", type=click.Choice(["after", "before"]), default="after", show_default=True,
              help="Write the leak after augmentation (fixed position) or before it (crop/flip move it).")
@click.option("--leak-strength", "strength", type=float, default=1.0, show_default=True,
              help="Share of training images that carry the leak.")
@click.option("--leak-reliability", "reliability", type=float, default=1.0, show_default=True,
              help="Share of leaked images whose leak encodes the true label.")
@click.option("--masker", default=None, help="Masker plugin; default: the method's own (casme for met).")
@click.option("--method", required=True, help="Method plugin to run, e.g. naive, clean, oracle, met.")
@click.option("--backbone", default=None,
              help="Any timm model name with options, e.g. resnet18:width=16,drop_rate=0.1 (width: ResNet stage "
                   "widths width x 1/2/4/8). Default: the dataset's (digits: resnet18:width=16; others: resnet18).")
@click.option("--recipe", default=None, help="Optimisation recipe (paper, fast, or the dataset's default).")
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs.")
@click.option("--batch-size", type=int, default=None, help="Override the recipe's batch size.")
@click.option("--lr", type=float, default=None, help="Override the recipe's learning rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-split", type=click.Choice(["test", "tune"]), default="test", show_default=True,
              help="test: train on the training split, score on the test set (leaderboards). tune: train without "
                   "the fixed held-out tune split and score on it (for choosing settings).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--deterministic", is_flag=True,
              help="Deterministic algorithms and no cudnn autotuning: repeatable GPU runs, somewhat slower.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the classifier.")
@click.option("--leaderboard-dir", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True)
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Where datasets live (default: $LEAKBENCH_DATA or ~/.cache/leakbench).")
@click.option("--save-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="The run's record under SAVE_DIR/<run_id>/: config, state, epoch log, checkpoint (for "
                   "`leakbench resume` and `leakbench show --run`).")
@click.option("--checkpoint-every", type=click.IntRange(1), default=1, show_default=True, metavar="N",
              help="Write the training checkpoint every N epochs (and after the last); a resume restarts from it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def run(compile_: bool, checkpoint_every: int, **options) -> None:
    """Train and evaluate one configuration; append a row to LEADERBOARD_DIR/<dataset>.csv."""
    from leakbench.runs.pipeline import run_one
    from leakbench.types import RunConfig

    print_result(run_one(RunConfig(compile=compile_, **options), common._registry(),
                         checkpoint_every=checkpoint_every))


@cli.command("list")
@click.argument("kind", type=click.Choice(KIND_CHOICES), required=False)
@click.option("--verbose", "-v", is_flag=True, help="Also show options and recipe notes.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(kind: str | None, verbose: bool, as_json: bool) -> None:
    """Show registered plugins: name, provider, supervision, description."""
    from leakbench.registry import KINDS

    registry = common._registry()
    kinds = [kind] if kind else list(KINDS)
    if as_json:
        out = {k: [_describe(info, True) for info in registry.all(k).values()] for k in kinds}
        click.echo(json.dumps(out, indent=2, default=str))
        return
    for k in kinds:
        click.secho(k, bold=True)
        infos = list(registry.all(k).values())
        width = max((len(i.name) for i in infos), default=4)
        for info in infos:
            provider = f"{info.provider} {info.version}".strip()
            click.echo(f"  {info.name:<{width}}  {provider:<16}  {info.cls.supervision:<10}  {info.cls.summary()}")
            if verbose:
                for line in _details(info):
                    click.echo(f"  {'':<{width}}    {line}")


def _describe(info, verbose: bool) -> dict:
    out = {"name": info.name, "provider": info.provider, "version": info.version,
           "supervision": info.cls.supervision, "description": info.cls.summary()}
    if verbose:
        out["details"] = _details(info)
    return out


def _details(info) -> list[str]:
    import dataclasses

    lines = []
    for f in info.cls.options():
        default = f.default if f.default is not dataclasses.MISSING else "required"
        lines.append(f"option {f.name} = {default!r}")
    if info.kind == "dataset":
        dataset = info.cls()
        lines.append(f"default recipe: {dataset.default_recipe}; default backbone: {dataset.default_backbone}; "
                     f"augmentation: crop padding "
                     f"{dataset.crop_padding}, flip {'on' if dataset.flip else 'off'}")
        if dataset.describe():
            lines.append(f"notes: {dataset.describe()}")
    if info.kind == "method":
        lines.append(f"masker: {info.cls.default_masker}" + (" (required)" if info.cls.uses_masker else ""))
    return lines


@cli.command()
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("--leakage", default=None, help="Only this leakage (name, any options).")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv"]), default="table", show_default=True)
@click.option("--leaderboard-dir", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True)
@click.option("--pivot", "metric", default=None, metavar="METRIC",
              help="Methods as columns, one row per setting, cells METRIC mean ± std (n), e.g. --pivot acc_clean.")
@click.option("--group-by", "group_by", default=None, metavar="COLS",
              help="Average over everything but these columns (e.g. method,leakage) instead of one group per "
                   "experiment.")
def leaderboard(dataset: str | None, leakage: str | None, fmt: str, leaderboard_dir: Path, metric: str | None,
                group_by: str | None) -> None:
    """Compare methods: one group per experiment, mean ± std over its seeds, best clean accuracy first.

    A run repeated with the same experiment and seed counts once (its latest row)."""
    from leakbench.results import leaderboard as lb
    columns = None if group_by is None else tuple(c.strip() for c in group_by.split(",") if c.strip())
    paths = lb.result_files(leaderboard_dir, dataset)
    if not paths:
        raise LeakbenchError(f"no leaderboard CSVs in {leaderboard_dir}" + (f" for dataset '{dataset}'" if dataset
                             else "") + "; run `leakbench run --method ...` first")
    table = lb.aggregate(lb.read(paths), dataset, leakage, group_by=columns)
    repeats = table.attrs.get("repeats_dropped", 0)
    if repeats:
        s = "s" if repeats > 1 else ""
        click.echo(f"note: {repeats} repeated run{s} (same experiment and seed) counted once, the latest kept "
                   f"({repeats} older row{s} left out)", err=True)
    if metric is None:
        click.echo(lb.render(table, fmt))
        return
    defaults = {name: info.cls.default_masker for name, info in common._registry().all("methods").items()}
    click.echo(lb.pivot(table, metric, defaults, fmt))


@cli.command()
@click.option("--dataset", default="digits", show_default=True)
@click.option("--leakage", default="binary-corner", show_default=True)
@click.option("--method", "methods", multiple=True, default=("naive", "met"), show_default=True,
              help="Repeat to compare; the first is the reference for relative cost.")
@click.option("--backbone", default=None, help="timm model with options; default: the dataset's.")
@click.option("--recipe", default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--steps", type=click.IntRange(1), default=50, show_default=True, help="Timed training steps.")
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the classifier.")
@click.option("--leaderboard-dir", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True)
@click.option("--data-root", type=click.Path(path_type=Path), default=None)
def bench(methods: tuple[str, ...], steps: int, warmup: int, compile_: bool, leaderboard_dir: Path,
          **options) -> None:
    """Measure training and evaluation images/s on this device; append to throughput.csv."""
    from leakbench.results.bench import measure, record
    from leakbench.types import RunConfig

    registry, rows = common._registry(), []
    for method in methods:
        config = RunConfig(method=method, compile=compile_, quiet=True, **options)
        rows.append(measure(config, steps, warmup, registry))
        path = record(rows[-1], leaderboard_dir)
    base = rows[0]["train_step_ms"] / rows[0]["batch_size"]
    click.echo(f"{rows[0]['device']}, {rows[0]['precision']}, batch {rows[0]['batch_size']}, "
               f"compile {'on' if compile_ else 'off'}")
    for row in rows:
        cost = row["train_step_ms"] / row["batch_size"] / base
        click.echo(f"  {row['method']:<12} train {row['train_images_per_second']:>10,.0f} img/s "
                   f"({row['train_step_ms']:.1f} ms/step, {cost:.2f}x {rows[0]['method']} per image)  "
                   f"eval {row['eval_images_per_second']:>10,.0f} img/s")
    click.echo(f"rows appended to {path}")


cli.add_command(data_commands.data)
cli.add_command(report_commands.show)
cli.add_command(report_commands.plot)
cli.add_command(report_commands.sweep)
cli.add_command(run_commands.resume)
cli.add_command(run_commands.runs)


def build_cli() -> click.Group:
    """The command group with plugin commands attached (not at import time)."""
    registry = common._registry()
    registry.pm.hook.register_commands(cli=cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    try:
        group = build_cli()
    except LeakbenchError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    group.main(args=argv, prog_name="leakbench")
