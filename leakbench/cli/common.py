"""What the command modules share: the registry they look plugins up in and the result table.

Command modules import this module, never the group in ``leakbench.cli`` (which imports them).
Commands call ``common._registry()`` at run time, so tests swap the registry here, in one place.
"""

from __future__ import annotations

import click


def _registry():
    from leakbench.registry import Registry

    return Registry()


def print_result(result) -> None:
    """The metrics table a finished run (``run`` or ``resume``) prints."""
    from leakbench.engine.evaluation import METRICS

    row = result.row
    click.echo(f"\n{row['method']} (masker {row['masker']}) on {row['dataset']} / {row['leakage']}, "
               f"seed {row['seed']}, {row['epochs']} epochs, {row['train_seconds']:.0f}s on {row['device']}, "
               f"scored on the {row['eval_split']} split")
    for metric in METRICS:
        value = result.metrics.get(metric)
        shown = "-" if value is None else f"{value:.2f}" if metric.startswith("acc") or "pct" in metric \
            else f"{value:.3f}"
        click.echo(f"  {metric:<20} {shown:>8}")
    click.echo(f"row {row['run_id']} appended to {result.leaderboard_path}")
