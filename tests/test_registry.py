"""The registry: built-ins load through entry points, names are unique, lookups help."""

from __future__ import annotations

import inspect
from pathlib import Path

import lb_duplicate_plugin
import lb_test_plugins
import pluggy
import pytest

from leakbench import hookspecs
from leakbench.errors import LeakbenchError
from leakbench.registry import KINDS, Registry, get_plugin_manager, parse_spec

ROOT = Path(__file__).parent.parent


def test_builtins_register_through_the_entry_point_group(registry):
    names = {kind: set(registry.all(kind)) for kind in KINDS}
    assert {"digits"} <= names["datasets"]
    assert {"binary-corner"} <= names["leakages"]
    assert {"none", "oracle", "casme"} <= names["maskers"]
    assert {"naive", "clean", "oracle", "met"} <= names["methods"]
    info = registry.get("methods", "met")
    assert (info.provider, info.kind) == ("leakbench", "method")
    assert info.version


def test_no_entry_points_means_no_plugins():
    assert Registry(get_plugin_manager(load_entrypoints=False)).all("methods") == {}


def test_duplicate_name_is_fatal_and_names_both_providers():
    pm = get_plugin_manager()
    pm.register(lb_duplicate_plugin)
    with pytest.raises(LeakbenchError) as err:
        Registry(pm).all("leakages")
    message = str(err.value)
    assert "registered twice" in message
    assert "leakbench 0.1.0" in message and "lb_duplicate_plugin" in message


def test_misspelled_hook_is_refused():
    class Typo:
        @hookspecs.hookimpl
        def register_leakage(self):  # missing the s
            return []

    pm = get_plugin_manager()
    pm.register(Typo())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_unknown_name_lists_choices_and_closest_match(registry):
    with pytest.raises(LeakbenchError, match=r"unknown leakage 'binary-corne' \(did you mean 'binary-corner'\?\)"):
        registry.get("leakages", "binary-corne")


def test_registered_test_plugin_is_found_with_its_module_as_provider():
    pm = get_plugin_manager()
    pm.register(lb_test_plugins)
    info = Registry(pm).get("datasets", "many-classes")
    assert info.provider == "lb_test_plugins"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("casme", ("casme", {})), ("casme:lambda_r=1", ("casme", {"lambda_r": "1"})),
     ("digits: size=8 , width=8", ("digits", {"size": "8", "width": "8"}))],
)
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


def test_options_are_typed_and_validated(registry):
    assert registry.create("maskers", "casme:lambda_r=100").lambda_r == 100.0
    assert registry.create("maskers", "casme:lambda_r=100").spec() == "casme:lambda_r=100.0"
    assert registry.create("maskers", "casme").spec() == "casme"
    with pytest.raises(LeakbenchError, match="expects float"):
        registry.create("maskers", "casme:lambda_r=lots")
    with pytest.raises(LeakbenchError, match="no option 'lamda_r'"):
        registry.create("maskers", "casme:lamda_r=1")
    with pytest.raises(LeakbenchError, match="lambda_r must be >= 0"):
        registry.create("maskers", "casme:lambda_r=-1")
    with pytest.raises(LeakbenchError, match="option 'lambda_r' must be a finite number, got 'nan'"):
        registry.create("maskers", "casme:lambda_r=nan")  # passes ">= 0"; refused for every float option
    with pytest.raises(LeakbenchError, match="key=value"):
        registry.create("maskers", "casme:10")


def test_every_hookspec_is_documented_with_an_example_and_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    specs = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(fn, "leakbench_spec")]
    assert len(specs) == 6
    for name in specs:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Example::" in doc, name
        assert f"`{name}`" in readme, f"README does not document the {name} hook"


def test_every_plugin_has_a_summary_and_valid_supervision(registry):
    for kind in KINDS:
        for info in registry.all(kind).values():
            assert info.cls.summary(), f"{kind} {info.name} has no docstring"
            assert info.cls.supervision in ("none", "leak-label", "leak-mask", "clean-data")
