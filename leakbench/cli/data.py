"""``leakbench data prepare|list``: thin wrappers over :mod:`leakbench.data.datastore`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from leakbench.errors import LeakbenchError

DATA_ROOT_HELP = "Where datasets live (default: $LEAKBENCH_DATA or ~/.cache/leakbench)."


def _cached_datasets() -> dict[str, type]:
    from leakbench.data.datastore import CachedDataset
    from leakbench.registry import Registry

    return {name: info.cls for name, info in Registry().all("datasets").items() if issubclass(info.cls, CachedDataset)}


@click.group()
def data() -> None:
    """Prepare datasets from archives or downloads, and show what is prepared."""


class ManyFromCommand(click.Command):
    """A command whose ``--from`` takes several paths, as a shell glob expands them (``--from part*.tar.gz``).

    A click option takes a fixed number of values, so the words after ``--from PATH`` up to the next
    option are rewritten into repeated ``--from`` options before parsing (``--from A --from B`` is
    unchanged). DATASET may still follow the paths: when no other word names it, the last one does.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        valued = {opt for param in self.params if isinstance(param, click.Option) and not param.is_flag
                  for opt in param.opts}
        return super().parse_args(ctx, spread_from(args, valued))


def spread_from(args: list[str], valued: set[str]) -> list[str]:
    """``[DATASET, --from, A, B]`` -> ``[DATASET, --from, A, --from, B]``; ``valued``: options that take a value."""
    out: list[str] = []
    spread: list[int] = []  # where in ``out`` each rewritten ``--from`` sits
    positional = taking = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # everything after it is positional
            positional = positional or i + 1 < len(args)
            out += args[i:]
            break
        if arg.startswith("-") and arg != "-":
            taking = arg == "--from" or arg.startswith("--from=")
            out.append(arg)
            if arg in valued and i + 1 < len(args):  # its value, whatever it looks like
                out.append(args[i + 1])
                i += 1
        elif taking:
            spread.append(len(out))
            out += ["--from", arg]
        else:
            positional = True
            out.append(arg)
        i += 1
    if spread and not positional:  # `--from A B cifar10`: the last word is DATASET
        del out[spread[-1]]
    return out


@data.command(cls=ManyFromCommand)
@click.argument("dataset")
@click.option("--from", "sources", multiple=True, type=click.Path(path_type=Path), metavar="PATH...",
              help="Archives, files or folders to read; several may follow one --from, as a shell glob "
                   "(--from part*.tar.gz) expands, or repeat --from; default: download.")
@click.option("--data-root", type=click.Path(path_type=Path), default=None, help=DATA_ROOT_HELP)
@click.option("--force", is_flag=True, help="Rebuild even if a cache from the same source exists.")
def prepare(dataset: str, sources: tuple[Path, ...], data_root: Path | None, force: bool) -> None:
    """Verify, read and decode DATASET once into a memory-mapped cache (name:key=value options allowed)."""
    from leakbench.data import data_root as resolve_root
    from leakbench.data import datastore
    from leakbench.registry import Registry

    root = resolve_root(data_root)
    plugin = Registry().create("datasets", dataset)
    if not isinstance(plugin, datastore.CachedDataset):
        raise LeakbenchError(f"dataset '{plugin.name}' needs no preparation; "
                             f"these do: {', '.join(_cached_datasets())}")
    started = dt.datetime.now(dt.timezone.utc)
    if plugin.in_place:
        if sources:
            raise LeakbenchError(f"{plugin.name} reads its images where they are: "
                                 f"run `leakbench data prepare {plugin.name} --data-root DIR` without --from")
        manifest = datastore.prepare(plugin, root, plugin.in_place_sources(root), force=force)
    elif sources:
        manifest = datastore.prepare(plugin, root, list(sources), force=force)
    elif not force and (existing := datastore.read_manifest(plugin.cache_dir(root))):
        manifest = existing
    else:
        manifest = datastore.prepare(plugin, root, datastore.download(plugin, root), force=force)
    fresh = dt.datetime.fromisoformat(manifest["created"]) >= started
    splits = manifest["splits"]
    counts = ", ".join(f"{split} {info['count']:,}" for split, info in splits.items())
    size = "x".join(map(str, splits["train"]["shape"][1:]))
    verb = f"prepared in {manifest['seconds']:.1f} s" if fresh else "already prepared (--force rebuilds)"
    click.echo(f"{plugin.name}: {verb}: {counts} images of {size} px, {len(manifest['classes'])} classes, "
               f"in {plugin.cache_dir(root)}")


@data.command("list")
@click.option("--data-root", type=click.Path(path_type=Path), default=None, help=DATA_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (with measured mean/std).")
def list_(data_root: Path | None, as_json: bool) -> None:
    """Show each dataset's state: missing or prepared, counts per split, size on disk, source."""
    from leakbench.data import data_root as resolve_root
    from leakbench.data import datastore

    root = resolve_root(data_root)
    rows = []
    for name, cls in _cached_datasets().items():
        if cls.in_place:  # no fixed place: it lives wherever --data-root DIR points
            rows.append({"dataset": name, "state": "in place", "source": f"--dataset {name} --data-root DIR"})
            continue
        row = datastore.cache_status(cls(), root)
        if as_json and row["state"] == "prepared":
            manifest = datastore.read_manifest(Path(row["path"]))
            row["stats"] = {split: {k: info[k] for k in ("mean", "std")} for split, info in manifest["splits"].items()}
        rows.append(row)
    if as_json:
        click.echo(json.dumps({"data_root": str(root), "datasets": rows}, indent=2))
        return
    click.echo(f"data root: {root}")
    header = ("dataset", "state", "train", "val", "image", "size", "source")
    table = [header] + [(r["dataset"], r["state"], _count(r.get("train")), _count(r.get("val")), r.get("image", "-"),
                         _size(r.get("bytes")), r["source"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) if i < 2 or i == 4 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths, strict=False))) + "  " + row[-1])


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"
