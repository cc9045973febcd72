"""``leakbench resume`` and ``leakbench runs``: thin click wrappers over run records."""

from __future__ import annotations

import json
from pathlib import Path

import click

from leakbench.cli import common
from leakbench.cli.common import print_result


@click.command()
@click.argument("run_id")
@click.option("--save-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Where the run's record lives (the --save-dir it ran with).")
@click.option("--restart", is_flag=True, help="Start the run over from epoch 0 (a corrupt or outdated checkpoint).")
@click.option("--checkpoint-every", type=click.IntRange(1), default=None, metavar="N",
              help="Checkpoint every N epochs from now on (default: as the run started).")
def resume(run_id: str, save_dir: Path, restart: bool, checkpoint_every: int | None) -> None:
    """Continue a stopped, killed or failed run from its last checkpoint; its row is an uninterrupted run's."""
    from leakbench.runs.resume import resume_run

    print_result(resume_run(run_id, save_dir, common._registry(), restart=restart,
                            checkpoint_every=checkpoint_every))


@click.command()
@click.option("--save-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Where run records live.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: one object per run.")
def runs(save_dir: Path, as_json: bool) -> None:
    """List run records: state, epoch, last loss and accuracy, speed, ETA or error (killed: its process is gone)."""
    from leakbench.runs.run_record import records, summarize

    found = [summarize(record) for record in records(save_dir)]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo(f"no run records in {save_dir}")
        return
    width = max(len(r["experiment"]) for r in found)
    for r in found:
        progress = f"{r['epoch']}/{r['total_epochs']}"
        numbers = ""
        if isinstance(r["loss"], (int, float)):
            numbers = f"loss {r['loss']:.4f}  acc {r['accuracy']:.2f}%  {r['images_per_second']:,.0f} img/s"
        elif r["loss"] is not None:
            numbers = f"loss {r['loss']}"
        tail = f"  ETA {_duration(r['eta_seconds'])}" if r["eta_seconds"] is not None else ""
        tail += f"  {r['error']}" if r["state"] == "failed" and r["error"] else ""
        click.echo(f"{r['run_id']}  {r['experiment']:<{width}}  seed {r['seed']}  {r['state']:<11}  {progress:>7}  "
                   f"{numbers}{tail}".rstrip())


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
