"""Pictures of runs and leaderboards: what a masker hides, and how methods compare.

``show_figure`` draws the MET paper's Figure 1 layout (original | spoiled | spoiled with the
mask overlaid | masked) from a finished run's checkpoints, so a mask-size number on the
leaderboard can be checked by eye. ``plot_leaderboard`` draws bars (methods x metrics,
std over seeds) or, with ``x``, one curve per method over a knob such as ``lambda_r``.
Matplotlib runs with the Agg backend: no display needed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakbench.errors import LeakbenchError
from leakbench.registry import Registry, parse_spec
from leakbench.types import RunConfig

BAR_METRICS = ("acc_clean", "acc_clean_masked", "acc_spoiled", "leak_following")
METRIC_LABELS = {
    "acc_clean": "clean acc. %", "acc_clean_masked": "masked acc. %", "acc_spoiled": "spoiled acc. %",
    "leak_following": "leak following %", "mask_size_pct": "mask size %", "mask_size_clean_pct": "mask size (clean) %",
    "leak_mask_share": "mask share on leak %", "leak_coverage": "leak coverage %",
}
SHARES = ("leak_following", "leak_mask_share", "leak_coverage")  # stored in [0, 1], drawn as %
DPI = 120


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- show


@dataclass
class LoadedRun:
    """A finished run rebuilt from its checkpoint folder: config, models, and its row if found."""

    run_id: str
    directory: Path
    config: RunConfig
    row: dict[str, Any] | None


def find_run(run: str, leaderboard_dir: Path) -> LoadedRun:
    """Locate ``run`` (a run id or a checkpoint folder) and read its config.

    Looks in the folder itself, then where the leaderboard row says the run saved to, then
    ``runs/<run_id>``, so a run is found wherever ``--save-dir`` put it.
    """
    from leakbench.results import leaderboard as lb
    row = None
    frame = lb.read(lb.result_files(leaderboard_dir)) if Path(leaderboard_dir).is_dir() else None
    if frame is not None and not frame.empty:
        hits = frame[frame["run_id"].astype(str) == Path(run).name]
        row = hits.iloc[0].to_dict() if not hits.empty else None
    candidates = [Path(run)]
    if row is not None:
        saved = json.loads(row["config_json"]).get("save_dir")
        if saved:
            candidates.append(Path(saved) / str(row["run_id"]))
    candidates.append(Path(RunConfig.save_dir or "runs") / Path(run).name)
    for directory in candidates:
        if (directory / "config.json").is_file() and (directory / "classifier.pt").is_file():
            raw = json.loads((directory / "config.json").read_text())
            return LoadedRun(directory.name, directory, RunConfig.from_dict(raw), row)
    where = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise LeakbenchError(f"no checkpoint for run '{run}' (looked in {where}); runs save to runs/<run_id>/ by default, "
                         "pass --run with the folder if it was saved elsewhere")


@dataclass
class Panels:
    """What the grid draws: images ``[N,3,H,W]`` as floats in [0, 1], masks, predictions."""

    original: Any
    spoiled: Any
    leak_mask: Any
    labels: Any
    class_names: list[str]
    masker: str = ""  # the run's masker spec, resolved ("casme", not the method's "default")
    mask: Any = None  # [N,1,H,W] in [0, 1], or None without a run (or with no masker)
    masked: Any = None
    predictions: dict[str, Any] | None = None  # panel name -> predicted labels


def compute_panels(
    dataset_spec: str,
    leakage_spec: str,
    run: LoadedRun | None = None,
    per_class: int = 2,
    max_classes: int = 10,
    data_root: Path | None = None,
    device: str = "cpu",
    registry: Registry | None = None,
) -> Panels:
    """The first ``per_class`` validation images of each of the first ``max_classes`` classes,
    spoiled with their true label's leak, and (with a run) the run's masks and predictions."""
    import torch

    from leakbench.engine.augment import Normalizer
    from leakbench.engine.session import plan_run, resolve_device
    from leakbench.types import Masker

    registry = registry or Registry()
    if run is not None:
        config = dataclasses.replace(run.config, device=device, data_root=data_root or run.config.data_root)
    else:
        config = RunConfig(method="naive", dataset=dataset_spec, leakage=leakage_spec, device=device,
                           data_root=data_root)
    plan = plan_run(config, registry)
    dev = resolve_device(device)
    val = plan.dataset.load("val", plan.data_root)
    picked = [i for c in range(min(max_classes, val.num_classes))
              for i in torch.nonzero(val.labels == c).flatten()[:per_class].tolist()]
    if not picked:
        raise LeakbenchError(f"dataset '{plan.dataset.name}' has no validation images to show")
    images, labels = val.images[picked].to(dev), val.labels[picked].to(dev)
    size = int(images.shape[-1])
    try:
        plan.leakage.prepare(val.num_classes, size)
    except ValueError as exc:
        raise LeakbenchError(f"leakage '{plan.leakage.name}': {exc}") from None
    gen = torch.Generator(device=dev).manual_seed(config.seed)
    spoiled, leak_mask = plan.leakage.apply(images, labels, gen)
    panels = Panels(images.float() / 255, spoiled.float() / 255, leak_mask.float(), labels, val.class_names)
    if run is None:
        return panels

    torch.manual_seed(config.seed)  # random maskers draw the same masks each time
    classifier, masker = load_models(run, plan, val.num_classes, size, dev)
    normalize = Normalizer(plan.dataset.mean, plan.dataset.std, dev)
    mean = torch.tensor(plan.dataset.mean, device=dev).view(1, -1, 1, 1)
    with torch.no_grad():
        x_clean, x_spoiled = normalize(images), normalize(spoiled)
        predictions = {"original": classifier(x_clean).argmax(1)}
        logits, feats = classifier(x_spoiled, features=True)
        predictions["spoiled"] = logits.argmax(1)
        mask = masker(x_spoiled, feats, leak_mask)
        if mask is not None:
            mask = mask.float()
            predictions["masked"] = classifier(Masker.apply(x_spoiled, mask)).argmax(1)
            # what the classifier saw, back in pixel space: masked pixels show the dataset mean
            panels.masked = panels.spoiled * (1 - mask) + mean * mask
    panels.mask, panels.predictions, panels.masker = mask, predictions, plan.masker.spec()
    return panels


def load_models(run: LoadedRun, plan, num_classes: int, image_size: int, device) -> tuple[Any, Any]:
    """Classifier and masker with the run's weights (``weights_only=True``), in eval mode."""
    import pickle

    import torch

    from leakbench.engine.backbone import create_classifier, to_device

    classifier = to_device(create_classifier(plan.backbone.name, num_classes, image_size,
                                             **plan.backbone.kwargs()), device)
    try:
        classifier.load_state_dict(torch.load(run.directory / "classifier.pt", map_location=device,
                                              weights_only=True))
        plan.masker.build(classifier, image_size, plan.recipe, device)
        for name, module in plan.masker.modules().items():
            module.load_state_dict(torch.load(run.directory / f"masker_{name}.pt", map_location=device,
                                              weights_only=True))
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:  # missing, mismatched or unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LeakbenchError(f"cannot load the checkpoint in {run.directory}: {first}") from exc
    classifier.eval()
    for module in plan.masker.modules().values():
        module.eval()
    return classifier, plan.masker


@dataclass
class Figure:
    """A written PNG and where each panel row's images landed in it (pixel boxes, for checks)."""

    path: Path
    boxes: dict[str, list[tuple[int, int, int, int]]]  # row name -> (left, top, right, bottom) per image


def show_figure(panels: Panels, out: Path, title: str = "") -> Figure:
    """Write the grid: one column per image, one row per panel; predictions under each image."""
    import numpy as np

    plt = _pyplot()
    rows = [("original", panels.original), ("spoiled", panels.spoiled)]
    if panels.mask is not None:
        rows += [("mask on spoiled", panels.spoiled), ("masked", panels.masked)]
    else:
        rows += [("leak mask", panels.spoiled)]
    n = panels.original.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(max(4.0, 0.9 * n + 1.2), 1.15 * len(rows) + 0.6),
                             squeeze=False)
    labels = panels.labels.cpu().tolist()
    for r, (name, images) in enumerate(rows):
        pictures = images.permute(0, 2, 3, 1).cpu().numpy().clip(0, 1)
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(pictures[c], interpolation="nearest")
            if name in ("mask on spoiled", "leak mask"):
                overlay = panels.mask if name == "mask on spoiled" else panels.leak_mask
                alpha = overlay[c, 0].cpu().numpy()
                red = np.zeros((*alpha.shape, 4))
                red[..., 0], red[..., 3] = 1.0, 0.75 * alpha
                ax.imshow(red, interpolation="nearest")
            if name == "mask on spoiled":  # the true leak pixels, outlined, to judge the mask by
                _outline(ax, panels.leak_mask[c, 0])
            ax.set_xticks([])
            ax.set_yticks([])
            if panels.predictions and name in panels.predictions:
                pred = int(panels.predictions[name][c])
                ax.set_xlabel(panels.class_names[pred], fontsize=7, labelpad=1,
                              color="tab:green" if pred == labels[c] else "tab:red")
            if r == 0:
                ax.set_title(panels.class_names[labels[c]], fontsize=8, pad=2)
        axes[r][0].set_ylabel(name, fontsize=8, rotation=90)
    if title:
        fig.suptitle(title, fontsize=9)
    note = "top: true class; under images: prediction (green right, red wrong)"
    if panels.mask is not None:
        note += "; red: mask, cyan outline: leak pixels"
    else:
        note += "; red: the leak's pixels"
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.canvas.draw()
    scale = DPI / fig.dpi
    height = fig.bbox.height * scale
    boxes = {}
    for r, (name, _) in enumerate(rows):
        boxes[name] = []
        for ax in axes[r]:
            e = ax.get_window_extent()
            left, top = round(e.x0 * scale), round(height - e.y1 * scale)
            boxes[name].append((left, top, left + round(e.width * scale), top + round(e.height * scale)))
    return Figure(_save(fig, out), boxes)


def _outline(ax, leak_mask) -> None:
    """A cyan frame around each leak pixel; not clipped, so pixels on the image edge show."""
    from matplotlib.patches import Rectangle

    for row, col in leak_mask.nonzero().tolist():
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=0.7,
                               clip_on=False))


def _save(fig, out: Path) -> Path:
    plt = _pyplot()
    out = Path(out)
    if not out.suffix:  # matplotlib would add .png itself; say the name it really wrote
        out = out.with_suffix(".png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=DPI)
    except OSError as exc:
        raise LeakbenchError(f"cannot write {out}: {exc.strerror or exc}; choose another --out") from None
    finally:
        plt.close(fig)
    return out


# --------------------------------------------------------------------------- plot


def plot_leaderboard(
    frame,
    out: Path,
    dataset: str | None = None,
    leakage: str | None = None,
    x: str | None = None,
    metrics: tuple[str, ...] = (),
    registry: Registry | None = None,
) -> Path:
    """Bars of ``metrics`` per configuration (mean, std over seeds), or with ``x`` one curve
    per configuration over that knob (a row column such as ``reliability``, or any masker or
    method option such as ``lambda_r``)."""
    from leakbench.results import leaderboard as lb
    table = lb.aggregate(frame, dataset, leakage)
    if table.empty:
        raise LeakbenchError("no leaderboard rows match; check --dataset/--leakage or run some configurations first")
    if x is None:
        return _bars(table, out, metrics or BAR_METRICS, _title(table))
    return _curves(frame, out, dataset, leakage, x, metrics or ("acc_clean", "leak_following"), registry)


def _scaled(metric: str, values):
    return values * 100 if metric in SHARES else values


def _title(table) -> str:
    parts = []
    for column in ("dataset", "leakage"):
        values = sorted(set(table[column].astype(str)))
        parts.append(values[0] if len(values) == 1 else f"{len(values)} {column}s")
    return " / ".join(parts)


def _labels(table, skip: tuple[str, ...] = ()) -> list[str]:
    """Method and masker, plus whatever other key column varies between the bars."""
    from leakbench.results.leaderboard import KEY_COLUMNS

    varying = [c for c in KEY_COLUMNS if c not in ("method", "masker", "supervision", *skip)
               and table[c].astype(str).nunique() > 1]
    out = []
    for _, row in table.iterrows():
        label = str(row["method"])
        if str(row["masker"]) not in ("none", ""):  # one option per line: long specs stay readable
            label += "\n" + str(row["masker"]).replace(":", "\n").replace(",", "\n")
        extra = [f"{c}={row[c]}" for c in varying]
        out.append(label + ("\n" + " ".join(extra) if extra else ""))
    return out


def _bars(table, out: Path, metrics: tuple[str, ...], title: str) -> Path:
    import numpy as np

    plt = _pyplot()
    unknown = [m for m in metrics if m not in table]
    if unknown:
        raise LeakbenchError(f"unknown metric {', '.join(unknown)}; pick from {', '.join(METRIC_LABELS)}")
    labels = _labels(table)
    n, k = len(table), len(metrics)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * n + 1.5), 4.6))
    positions = np.arange(n)
    colors = plt.get_cmap("tab10").colors
    for j, metric in enumerate(metrics):
        mean = _scaled(metric, table[metric].astype(float).to_numpy())
        std = _scaled(metric, table[f"{metric}_std"].astype(float).to_numpy())
        ax.bar(positions + (j - (k - 1) / 2) * width, np.nan_to_num(mean), width, color=colors[j % 10],
               label=METRIC_LABELS.get(metric, metric))
        spread = ~np.isnan(std) & ~np.isnan(mean)  # one seed: no error bar rather than a zero one
        if spread.any():
            ax.errorbar((positions + (j - (k - 1) / 2) * width)[spread], mean[spread], yerr=std[spread], fmt="none",
                        ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_xticks(positions)
    ax.set_xticklabels([f"{lbl}\n(n={int(c)})" for lbl, c in zip(labels, table["n"], strict=True)], fontsize=7)
    ax.set_ylabel("%")
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{title}: mean ± std over seeds (no bar: the metric does not apply)", fontsize=9)
    ax.legend(fontsize=7, ncols=min(k, 4), loc="upper center", frameon=False)
    fig.tight_layout()
    return _save(fig, out)


def knob_value(row, x: str, registry: Registry) -> float | None:
    """``x`` for one leaderboard row: a row column, else the masker's or method's option
    (its default when the spec leaves it out), else None when the knob does not apply."""
    if x in row and x not in ("masker", "method"):
        value = row[x]
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            return None
        try:
            return float(value)
        except ValueError:
            raise LeakbenchError(f"--x {x} is not a numeric knob (it has '{value}'); use reliability, strength "
                                 "or a numeric option such as lambda_r") from None
    for kind in ("masker", "method"):
        name, options = parse_spec(str(row[kind]))
        if x in options:
            return float(options[x])
        plugins = registry.all(f"{kind}s")
        if name in plugins:
            for f in plugins[name].cls.options():
                if f.name == x and f.default is not dataclasses.MISSING:
                    return float(f.default)
    return None


def _without(spec: str, option: str) -> str:
    name, options = parse_spec(spec)
    rest = ",".join(f"{k}={v}" for k, v in options.items() if k != option)
    return name + (f":{rest}" if rest else "")


def _curves(frame, out: Path, dataset, leakage, x: str, metrics: tuple[str, ...], registry) -> Path:
    import numpy as np

    from leakbench.results import leaderboard as lb
    plt = _pyplot()
    registry = registry or Registry()
    table = lb.aggregate(frame, dataset, leakage)
    table["_x"] = [knob_value(row, x, registry) for _, row in table.iterrows()]
    if table["_x"].isna().all():
        raise LeakbenchError(f"no run has a knob '{x}'; use reliability, strength or an option of its masker or "
                             "method such as lambda_r")
    # one line per configuration apart from the knob itself
    table["_line"] = [
        f"{row['method']} / {_without(str(row['masker']), x)}" for _, row in table.iterrows()]
    others = [c for c in ("dataset", "leakage", "strength", "reliability", "epochs", "backbone")
              if c != x and table[c].astype(str).nunique() > 1]
    if others:
        table["_line"] = table["_line"] + "  " + table[others].astype(str).agg(" ".join, axis=1)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    xs = table["_x"].dropna().astype(float)
    log = bool((xs > 0).all() and xs.max() / xs.min() >= 50)
    colors = plt.get_cmap("tab10").colors
    for ax, metric in zip(axes[0], metrics, strict=True):
        if metric not in table:
            raise LeakbenchError(f"unknown metric {metric}; pick from {', '.join(METRIC_LABELS)}")
        for i, (line, group) in enumerate(table.groupby("_line", sort=True)):
            color = colors[i % 10]
            mean = _scaled(metric, group[metric].astype(float).to_numpy())
            std = _scaled(metric, group[f"{metric}_std"].astype(float).to_numpy())
            if np.isnan(mean).all():  # the metric does not apply (e.g. mask size without a masker)
                continue
            if group["_x"].isna().all():  # the knob does not apply: a reference level
                ax.axhline(float(np.nanmean(mean)), ls="--", lw=1, color=color, label=line)
                continue
            order = np.argsort(group["_x"].astype(float).to_numpy())
            gx = group["_x"].astype(float).to_numpy()[order]
            ax.errorbar(gx, mean[order], yerr=np.nan_to_num(std[order]), marker="o", ms=4, capsize=3, lw=1.2,
                        color=color, label=line)
        if log:
            ax.set_xscale("log")
        ticks = sorted(set(xs))
        if len(ticks) <= 8:  # label the values that were run, not powers of ten
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        if metric.startswith("acc") or metric in SHARES:
            ax.set_ylim(0, 105)
        ax.set_xlabel(x)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    rows = math.ceil(len(names) / 3)
    fig.legend(handles, names, loc="lower center", ncols=3, fontsize=7, frameon=False)
    fig.suptitle(f"{_title(table)}: mean ± std over seeds against {x} (dashed: runs without {x})", fontsize=9)
    fig.set_size_inches(fig.get_size_inches()[0], 4.2 + 0.18 * rows)
    fig.tight_layout(rect=(0, 0.2 * rows / (rows + 4), 1, 1))
    return _save(fig, out)
