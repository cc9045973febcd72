"""Build the plugin manager and look plugins up by kind and name.

Built-ins and outside packages load the same way: every entry point in the ``leakbench``
group. ``LEAKBENCH_LOAD_PLUGINS`` (comma-separated distribution names, empty for none)
limits which outside distributions load; leakbench's own always do.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pluggy

from leakbench import hookspecs
from leakbench.errors import LeakbenchError, PluginError, closest
from leakbench.types import SUPERVISION, Dataset, Executor, Leakage, Masker, Method, Plugin

KINDS: dict[str, tuple[str, type[Plugin]]] = {
    "datasets": ("register_datasets", Dataset),
    "leakages": ("register_leakages", Leakage),
    "maskers": ("register_maskers", Masker),
    "methods": ("register_methods", Method),
    "executors": ("register_executors", Executor),
}
SINGULAR = {"datasets": "dataset", "leakages": "leakage", "maskers": "masker", "methods": "method",
            "executors": "executor"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin class and the distribution that provides it."""

    kind: str
    cls: type[Plugin]
    provider: str
    version: str

    @property
    def name(self) -> str:
        return self.cls.name


def get_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A fresh manager: specs added, entry points loaded, misspelled hooks refused."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if load_entrypoints:
        _load_entrypoints(pm)
    pm.check_pending()
    return pm


def _load_entrypoints(pm: pluggy.PluginManager) -> None:
    # Our own loop rather than pm.load_setuptools_entrypoints: a broken outside plugin must
    # give a one-line error naming its distribution instead of an ImportError traceback.
    allowed = os.environ.get("LEAKBENCH_LOAD_PLUGINS")
    allow = None if allowed is None else {n.strip().lower() for n in allowed.split(",") if n.strip()}
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        dist_name = (dist.metadata["Name"] or "").lower()
        if dist_name in seen:  # a copy earlier on sys.path shadows this one, as it does for imports
            continue
        seen.add(dist_name)
        if allow is not None and dist_name != hookspecs.PROJECT and dist_name not in allow:
            continue
        for ep in dist.entry_points:
            if ep.group != hookspecs.PROJECT or pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin '{ep.name}' from {dist_name} failed to import ({type(exc).__name__}: {exc}); "
                    f"fix or uninstall {dist_name}, or set LEAKBENCH_LOAD_PLUGINS to skip it"
                ) from exc
            pm.register(plugin, name=ep.name)


def _provider(plugin: object, fallback: str, packages: dict[str, list[str]]) -> tuple[str, str]:
    """(distribution, version) that ships ``plugin``'s module, else its registered name."""
    top = getattr(plugin, "__name__", type(plugin).__module__).split(".")[0]
    for dist_name in packages.get(top, []):
        return dist_name, importlib.metadata.version(dist_name)
    return fallback, ""


class Registry:
    """Typed access to the registered plugin classes of each kind."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self.pm = pm if pm is not None else get_plugin_manager()

    @cached_property
    def _all(self) -> dict[str, dict[str, PluginInfo]]:
        packages = importlib.metadata.packages_distributions()  # one scan of installed metadata
        return {kind: self._collect(kind, packages) for kind in KINDS}

    def _collect(self, kind: str, packages: dict[str, list[str]]) -> dict[str, PluginInfo]:
        hook_name, base = KINDS[kind]
        found: dict[str, PluginInfo] = {}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            provider, version = _provider(impl.plugin, impl.plugin_name, packages)
            try:
                classes = list(impl.function() or [])
            except Exception as exc:
                raise PluginError(f"plugin '{impl.plugin_name}' ({provider}) failed in {hook_name}: {exc}") from exc
            for cls in classes:
                info = PluginInfo(SINGULAR[kind], cls, provider, version)
                _validate(info, base)
                if cls.name in found:
                    other = found[cls.name]
                    raise LeakbenchError(
                        f"{info.kind} '{cls.name}' is registered twice: by {_who(other)} and by {_who(info)}; "
                        "uninstall one of them or rename it"
                    )
                found[cls.name] = info
        return dict(sorted(found.items()))

    def all(self, kind: str) -> dict[str, PluginInfo]:
        return self._all[kind]

    def get(self, kind: str, name: str) -> PluginInfo:
        plugins = self._all[kind]
        if name not in plugins:
            several = [part.strip() for part in name.split(",")]
            if len(several) > 1 and all(part in plugins for part in several):  # `--method clean,naive`
                flag = "--" + SINGULAR[kind]
                raise LeakbenchError(f"one {SINGULAR[kind]} per {flag} (commas separate a plugin's options); "
                                     f"for several, repeat the flag: " + " ".join(f"{flag} {p}" for p in several))
            raise LeakbenchError(
                f"unknown {SINGULAR[kind]} '{name}'{closest(name, plugins)}; "
                f"available: {', '.join(plugins) or 'none'} (see `leakbench list {kind}`)"
            )
        return plugins[name]

    def create(self, kind: str, spec: str) -> Any:
        """Instantiate ``name:key=value,...`` with validated options; a plugin with a
        ``positional`` option also takes ``name:value`` (``processes:2``)."""
        name = spec.strip().partition(":")[0].strip()
        cls = self.get(kind, name).cls
        _, options = parse_spec(_positional(spec, cls.positional))
        return cls.from_options(options)


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``patch:size=4,position=random`` -> ("patch", {"size": "4", "position": "random"})."""
    name, _, rest = spec.strip().partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise LeakbenchError(f"cannot read option '{item}' in '{spec}'; write name:key=value,key=value")
        options[key.strip().replace("-", "_")] = value.strip()
    return name.strip(), options


def _positional(spec: str, option: str) -> str:
    """``name:value,k=v`` -> ``name:option=value,k=v`` when the first item is a bare value."""
    name, colon, rest = spec.partition(":")
    first, comma, others = rest.partition(",")
    if not option or not colon or not first.strip() or "=" in first:
        return spec
    return f"{name}:{option}={first.strip()}{comma}{others}"


def _who(info: PluginInfo) -> str:
    return f"{info.provider} {info.version}".strip() + f" ({info.cls.__module__}.{info.cls.__qualname__})"


def _validate(info: PluginInfo, base: type[Plugin]) -> None:
    where = _who(info)
    if not (isinstance(info.cls, type) and issubclass(info.cls, base)):
        raise LeakbenchError(f"{where} registered {info.cls!r} as a {info.kind}, not a {base.__name__} subclass")
    if not _NAME.match(info.cls.name or ""):
        raise LeakbenchError(f"{where}: {info.kind} name '{info.cls.name}' must be a lowercase slug like 'my-leak'")
    if info.cls.supervision not in SUPERVISION:
        raise LeakbenchError(f"{where}: supervision '{info.cls.supervision}' must be one of {', '.join(SUPERVISION)}")
