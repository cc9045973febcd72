"""The plugin contract for leakbench: the one module a plugin author needs to read.

A plugin is a module whose functions carry ``@hookimpl`` and are named after one of the
specs below. It is found through the ``leakbench`` entry-point group, exactly like the
built-ins in ``leakbench_builtins``. In your package's ``pyproject.toml``::

    [project.entry-points.leakbench]
    my-leak = "my_package.my_leak"

Each ``register_*`` hook returns *classes*. A class sets a unique lowercase ``name`` (what
users type, e.g. ``--leakage my-leak``) and a docstring whose first line ``leakbench list``
shows. Options are dataclass fields with defaults; users set them as
``--leakage my-leak:size=4,position=random`` and ``__post_init__`` validates them.

Keep plugin modules cheap to import: import torch inside methods, so ``leakbench list``
stays fast and never touches a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from leakbench.types import Dataset, Executor, Leakage, Masker, Method

PROJECT = "leakbench"  # marker name == entry-point group

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_datasets() -> Iterable[type[Dataset]]:
    """Return dataset classes (subclasses of :class:`leakbench.types.Dataset`).

    A dataset loads a split as uint8 ``[N,3,H,W]`` images with int64 labels and class
    names, and declares normalisation constants and a default training recipe.

    Example::

        @hookimpl
        def register_datasets():
            return [MyScans]
    """


@hookspec
def register_leakages() -> Iterable[type[Leakage]]:
    """Return leakage classes (subclasses of :class:`leakbench.types.Leakage`).

    A leakage writes a label-encoding cue into a batch of uint8 images and returns a
    boolean mask of the region where the leak may be written. It is vectorised over the
    batch, deterministic given its inputs, and writes whatever *leak label* it is given, so
    the pipeline can build flipped validation sets with it.

    The leak-mask rule: for the same images and random state the mask is the same
    whatever the leak label, and every changed pixel lies inside it. A watermark's mask is
    the box the text may occupy, never the ink of the digits; a dot whose column encodes
    the label masks the whole row it may sit in. Maskers show the classifier where they
    mask, so a label-shaped mask would hand the label back. Every run checks this on a
    probe batch before training and stops with one line naming the plugin if it fails.

    Example::

        @hookimpl
        def register_leakages():
            return [RedDot]
    """


@hookspec
def register_maskers() -> Iterable[type[Masker]]:
    """Return masker classes (subclasses of :class:`leakbench.types.Masker`).

    A masker turns a batch (and the classifier's features, and the leak mask if it is
    allowed to see it) into a soft mask ``m`` in [0, 1] of shape ``[B,1,H,W]``. Learned
    maskers own their network, optimiser and loss.

    Example::

        @hookimpl
        def register_maskers():
            return [BlurMasker]
    """


@hookspec
def register_methods() -> Iterable[type[Method]]:
    """Return method classes (subclasses of :class:`leakbench.types.Method`).

    A method is a training procedure: it receives each prepared batch and updates the
    classifier (and a learned masker). It declares its supervision (``none``, ``leak-label``,
    ``leak-mask`` or ``clean-data``) so leaderboards never mix oracle-informed rows with
    unsupervised ones; only a ``leak-label`` method is handed the batch's leak labels.

    A method that needs more than one pass (train, look at the model, train again) returns
    its schedule from ``stages(epochs)``: ``Stage(name, epochs, begin)`` objects whose epochs
    add up to the run's. The engine still owns the data, augmentation, the leak, the
    learning-rate schedule (restarted per stage), progress and checkpoints; ``begin(trainer)``
    uses the trainer's tools (``predict``, ``training_images``, ``held_out_clean``,
    ``reset_classifier``, ``new_classifier``, ``set_sample_weights``). The method's own
    networks, optimisers and state (``modules``, ``optimizers``, ``state_dict``) are saved with
    the run's checkpoint, so a resumed run continues in the right stage.

    Example::

        @hookimpl
        def register_methods():
            return [GroupDRO]
    """


@hookspec
def register_executors() -> Iterable[type[Executor]]:
    """Return executor classes (subclasses of :class:`leakbench.types.Executor`).

    An executor decides where a sweep's cells run: ``leakbench sweep --executor NAME:options``
    (built-ins: ``local``, ``processes:N``, ``ray``). Its ``run(cells, task, report, stop)``
    calls ``task(cell)`` for each cell, wherever it likes (``task`` pickles), and hands each
    outcome to ``report`` in the sweep's process; the per-cell logic (resuming a stopped
    run, failure isolation, the leaderboard row) stays in ``task``, so every executor gets
    it for free. Import heavy or optional libraries inside ``run``, and turn a missing one
    into a one-line ``LeakbenchError`` that says what to install.

    Example::

        @hookimpl
        def register_executors():
            return [SlurmArray]
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Attach extra subcommands to the ``leakbench`` command group.

    Example::

        @hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                click.echo("hello from my plugin")
    """
