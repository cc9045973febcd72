"""`--compile` on CPU: MET's step through a compiled classifier, no graph breaks, no recompiles.

The risky part of MET under torch.compile is the masker's ``autograd.grad(..., retain_graph=True)``
through the compiled classifier's backward, followed by the classifier's own backward through
the same graph. These runs use dynamo + AOTAutograd with the ``aot_eager_decomp_partition``
backend: graph capture, guards, Inductor's decompositions and its min-cut partition of forward
and backward, donated buffers included (which broke MET after a naive run in one process), run
eagerly; Inductor's C++ code generation would add minutes per test on a CPU and checks nothing
of ours.
"""

from __future__ import annotations

import csv
import functools

import pytest
import torch
import torch._dynamo
from conftest import TINY
from torch._dynamo.utils import counters

TWO_EPOCHS = [*TINY[:-3], "--epochs", "2", "--quiet"]


@pytest.fixture
def compiled(monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager_decomp_partition"))
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(("method", "graphs"), [
    # naive: the train forward, and the two eval forwards (with features, which the evaluation
    # hands to every masker, and plain, for leak following)
    ("naive", 3),
    # MET: train forward with features (step A), train forward of the masked image (the input
    # needs a gradient for the masker), and the same two eval forwards
    ("met", 4),
])
def test_compiled_step_has_no_graph_breaks_and_one_graph_per_call_kind(method, graphs, compiled, cli_with,
                                                                      tmp_path):
    result = cli_with(["run", "--method", method, *TWO_EPOCHS, "--compile"])
    assert result.exit_code == 0, result.output
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    # each kind of call compiles once, in the first epoch; the second epoch recompiles nothing
    assert counters["stats"]["unique_graphs"] == graphs, dict(counters["stats"])
    with open(tmp_path / "leaderboards" / "digits.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert 0 <= float(row["acc_clean"]) <= 100 and row["method"] == method
    if method == "met":
        assert 0 < float(row["mask_size_pct"]) < 100


def test_met_after_naive_in_one_process(compiled, cli_with, tmp_path):
    """A sweep runs naive, then MET, in one process; compiled graphs are shared between classifiers
    of one architecture, and a backward compiled for naive must survive MET's retained graph."""
    for method in ("naive", "met"):
        result = cli_with(["run", "--method", method, *TINY, "--compile"])
        assert result.exit_code == 0, result.output
    with open(tmp_path / "leaderboards" / "digits.csv", newline="") as handle:
        assert [row["method"] for row in csv.DictReader(handle)] == ["naive", "met"]
