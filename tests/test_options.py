"""Plugin options and recipe overrides refuse values no run can use: nan and inf in particular.

``float("nan")`` and ``float("inf")`` parse, so without a check they reach the plugins: a
nan passes every ``x < 0`` test, and an inf learning rate trains to nan weights and still
appends a leaderboard row. The refusal lives in ``_coerce`` so every float option of every
plugin, built-in or outside, gets it without writing its own check.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import TINY

from leakbench import Masker, hookimpl
from leakbench.errors import LeakbenchError
from leakbench.registry import KINDS, Registry
from leakbench.runs import sweep as sw

NON_FINITE = ["nan", "inf", "-inf", "NaN", "Infinity"]


def _float_options() -> list[tuple[str, str, str]]:
    """(kind, plugin name, option) for every float-typed option of every registered plugin."""
    found = []
    for kind, infos in ((k, Registry().all(k)) for k in KINDS):
        for name, info in infos.items():
            hints = typing.get_type_hints(info.cls)
            for f in info.cls.options():
                hint = hints[f.name]
                args = [a for a in typing.get_args(hint) if a is not type(None)]
                if hint is float or args == [float]:
                    found.append((kind, name, f.name))
    return found


FLOAT_OPTIONS = _float_options()


def test_the_builtins_have_float_options_to_check():
    assert ("maskers", "casme", "lambda_r") in FLOAT_OPTIONS and ("methods", "rrr", "lambda_rrr") in FLOAT_OPTIONS


@pytest.mark.parametrize(("kind", "name", "option"), FLOAT_OPTIONS)
def test_every_float_option_of_every_plugin_refuses_non_finite_values(registry, kind, name, option):
    what = f"{kind[:-1]} '{name}' option '{option}'"
    for text in NON_FINITE:
        with pytest.raises(LeakbenchError, match=rf"^{what} must be a finite number, got '{text}'$"):
            registry.create(kind, f"{name}:{option}={text}")


def test_finite_floats_still_parse(registry):
    assert registry.create("maskers", "casme:lambda_r=1e3,clip_norm=0.5").params() == {"lambda_r": 1000.0,
                                                                                        "clip_norm": 0.5}
    assert registry.create("methods", "rrr:lambda_rrr=-0.0").lambda_rrr == 0.0


# An outside plugin with no checks of its own, and an Optional float (the Optional[X] -> X path).
@dataclass
class GainMasker(Masker):
    """Masks nothing; has a float option and does not validate it."""

    name: ClassVar[str] = "gain"
    gain: float | None = None

    def __call__(self, images, features, leak_mask):
        return None


outside_plugin = types.ModuleType("lb_gain_plugin")
outside_plugin.register_maskers = hookimpl(lambda: [GainMasker])


def _assert_one_line_error(result, message: str, leaderboards: Path) -> None:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert message in result.output
    assert not list(leaderboards.glob("*.csv")), "a refused run must not append a leaderboard row"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "met", "--masker", "casme:lambda_r=nan"], "masker 'casme' option 'lambda_r' must be a finite "
                                                                "number, got 'nan'"),
        (["--method", "met", "--masker", "casme:clip_norm=inf"], "masker 'casme' option 'clip_norm' must be a finite "
                                                                 "number, got 'inf'"),
        (["--method", "rrr:lambda_rrr=nan"], "method 'rrr' option 'lambda_rrr' must be a finite number, got 'nan'"),
        (["--method", "met", "--masker", "gain:gain=inf"], "masker 'gain' option 'gain' must be a finite number, "
                                                           "got 'inf'"),
        (["--method", "naive", "--lr", "inf"], "--lr must be a positive finite number, got inf"),
        (["--method", "naive", "--lr", "nan"], "--lr must be a positive finite number, got nan"),
        (["--method", "naive", "--lr", "-inf"], "--lr must be a positive finite number, got -inf"),
    ],
)
def test_non_finite_values_on_the_command_line_are_one_error_line(cli_with, tmp_path, args, message):
    boards = tmp_path / "boards"
    result = cli_with(["run", *args, *TINY, "--leaderboard-dir", str(boards)], outside_plugin)
    _assert_one_line_error(result, message, boards)


def test_sweep_files_refuse_non_finite_options_and_settings(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('method = ["met"]\n[options]\nlambda_r = [nan, 10]\n')
    cells = sw.plan_cells(sw.expand(sw.load_toml(path), Registry()), Registry(), tmp_path)
    assert [c.status for c in cells] == ["invalid", "pending"]
    assert cells[0].error == "masker 'casme' option 'lambda_r' must be a finite number, got 'nan'"
    lr = tmp_path / "lr.toml"
    lr.write_text('method = ["naive"]\nlr = [inf]\n')
    with pytest.raises(LeakbenchError, match="lr must be a finite number, got 'inf'"):
        sw.expand(sw.load_toml(lr), Registry())
