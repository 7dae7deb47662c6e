"""Finding plugins: one cached pluggy manager, built-ins registered through the same hooks.

``get_plugin_manager()`` adds the hook specs, registers the built-in plugins, loads every
``wren`` entry point (one that fails to import only warns, naming its distribution, and is kept
in :meth:`PluginRegistry.problems` for ``wren plugins`` and the "unknown backend" error; an
entry-point name declared by two distributions is reported there too), and checks that every
hook implementation matches a spec. Set ``WREN_DISABLE_PLUGINS=1`` to load built-ins
only. :class:`PluginRegistry` answers "which class is backend X?" with helpful errors.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
import threading
import warnings
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator

import pluggy

from wren import hookspecs
from wren.errors import BackendNotInstalledError, PluginError

if TYPE_CHECKING:
    import importlib.metadata as importlib_metadata

logger = logging.getLogger("wren.plugins")

BUILTIN_MODULES = ("wren.builtins",)

#: Plugins wren knows of but does not ship: a missing one names the distribution to install.
KNOWN_DISTRIBUTIONS = {
    "compute": {
        "ibm_cf": "wren-backend-ibmcf",
        "openwhisk": "wren-backend-openwhisk",
        "knative": "wren-backend-knative",
        "docker": "wren-backend-docker",
        "code_engine": "wren-backend-codeengine",
    },
    "storage": {"ibm_cos": "wren-storage-cos"},
    "monitor": {"rabbitmq": "wren-core[rabbitmq]"},
}

#: Built-in plugins that need an optional extra: (kind, name) -> (module, what to install).
NEEDS_EXTRA = {("monitor", "rabbitmq"): ("pika", "wren-core[rabbitmq]")}

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_registry: PluginRegistry | None = None


def _dist_of(ep: importlib_metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ("unknown distribution", "")
    return (dist.metadata["Name"], dist.version)


def create_plugin_manager(load_entry_points: bool | None = None) -> pluggy.PluginManager:
    """Build a fresh plugin manager (tests use this; everyone else the cached one)."""
    if load_entry_points is None:
        load_entry_points = os.environ.get("WREN_DISABLE_PLUGINS", "").lower() not in ("1", "true", "yes")
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    import importlib

    for modname in BUILTIN_MODULES:
        pm.register(importlib.import_module(modname), name=modname)
    pm._wren_dists = {}  # type: ignore[attr-defined]  # plugin name -> (dist, version)
    pm._wren_ep_owner = {}  # type: ignore[attr-defined]  # entry-point name -> (dist, version)
    pm._wren_problems = []  # type: ignore[attr-defined]  # failed and duplicate entry points
    # entry points load on first need: a job on the built-ins never imports a cloud SDK
    pm._wren_pending_eps = load_entry_points  # type: ignore[attr-defined]
    pm._wren_ep_lock = threading.Lock()  # type: ignore[attr-defined]
    pm.check_pending()
    return pm


def load_entry_points(pm: pluggy.PluginManager) -> bool:
    """Load the ``wren`` entry points into ``pm`` once. Returns True if this call loaded them."""
    if not getattr(pm, "_wren_pending_eps", False):
        return False
    with pm._wren_ep_lock:  # type: ignore[attr-defined]
        if not pm._wren_pending_eps:  # type: ignore[attr-defined]
            return False
        owners = pm._wren_ep_owner  # type: ignore[attr-defined]
        problems = pm._wren_problems  # type: ignore[attr-defined]
        import importlib.metadata  # here: its import costs every process (a pool worker too) 10 ms

        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            dist, version = _dist_of(ep)
            first = owners.get(ep.name)
            if first is not None or pm.has_plugin(ep.name) or pm.get_plugin(ep.name) is not None:
                if first is not None and first[0] == dist:
                    continue  # the same distribution seen twice on sys.path
                by = f"{first[0]} {first[1]}".strip() if first else "a plugin registered already"
                message = (
                    f"the wren entry point {ep.name!r} is declared by {by} (used) and by {dist} {version} "
                    f"(ignored): uninstall one of them"
                )
                problems.append({"kind": "duplicate", "name": ep.name, "distribution": dist,
                                 "version": version, "error": message})
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                continue
            owners[ep.name] = (dist, version)
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not break the rest
                error = f"{type(exc).__name__}: {exc}"
                problems.append({"kind": "failed", "name": ep.name, "distribution": dist,
                                 "version": version, "error": error})
                warnings.warn(
                    f"wren plugin {ep.name!r} from {dist} {version} failed to load and is "
                    f"skipped: {error}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            pm._wren_dists[ep.name] = (dist, version)  # type: ignore[attr-defined]
        pm.check_pending()
        pm._wren_pending_eps = False  # type: ignore[attr-defined]
    return True


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = create_plugin_manager()
        return _manager


def get_registry() -> PluginRegistry:
    global _registry
    pm = get_plugin_manager()
    with _lock:
        if _registry is None or _registry.pm is not pm:
            _registry = PluginRegistry(pm)
        return _registry


def reset() -> None:
    """Forget the cached manager (the next call builds a new one)."""
    global _manager, _registry
    with _lock:
        _manager = None
        _registry = None


@contextlib.contextmanager
def use_plugin_manager(pm: pluggy.PluginManager) -> Iterator[pluggy.PluginManager]:
    """Make ``pm`` the process-wide manager for the duration of the block (for tests)."""
    global _manager, _registry
    with _lock:
        saved = (_manager, _registry)
        _manager, _registry = pm, None
    try:
        yield pm
    finally:
        with _lock:
            _manager, _registry = saved


@dataclasses.dataclass(frozen=True)
class Provided:
    """A spec together with where it came from."""

    spec: Any
    plugin_name: str
    distribution: str
    version: str


class PluginRegistry:
    """Specs offered by the registered plugins, looked up by name."""

    KINDS = {
        "compute": "wren_compute_backends",
        "storage": "wren_storage_backends",
        "monitor": "wren_monitors",
    }

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self._cache: dict[str, dict[str, list[Provided]]] = {}

    def load_all(self) -> None:
        """Make sure every installed plugin is loaded (entry points load lazily)."""
        if load_entry_points(self.pm):
            self._cache.clear()

    def _origin(self, plugin: Any) -> tuple[str, str, str]:
        name = self.pm.get_name(plugin) or repr(plugin)
        dists = getattr(self.pm, "_wren_dists", {})
        if name in dists:
            dist, version = dists[name]
        elif name in BUILTIN_MODULES:
            from wren.version import __version__

            dist, version = "wren-core", __version__
        else:
            dist, version = f"plugin {name}", ""
        return name, dist, version

    def provided(self, kind: str) -> dict[str, list[Provided]]:
        """Every name of ``kind`` with each plugin that claims it."""
        if kind in self._cache:
            return self._cache[kind]
        hook = getattr(self.pm.hook, self.KINDS[kind])
        out: dict[str, list[Provided]] = {}
        for impl in hook.get_hookimpls():
            name, dist, version = self._origin(impl.plugin)
            try:
                specs = impl.function() or []
            except Exception as exc:  # shown by `wren plugins` and in "unknown backend" errors
                error = f"its hook {self.KINDS[kind]} raised {type(exc).__name__}: {exc}"
                problems = self.pm.__dict__.setdefault("_wren_problems", [])
                if not any(p["name"] == name and p["error"] == error for p in problems):
                    problems.append({"kind": "failed", "name": name, "distribution": dist,
                                     "version": version, "error": error})
                warnings.warn(f"wren plugin {name!r} ({dist}): {error}", RuntimeWarning, stacklevel=2)
                continue
            for spec in specs:
                out.setdefault(spec.name, []).append(Provided(spec, name, dist, version))
        self._cache[kind] = out
        return out

    def names(self, kind: str) -> list[str]:
        self.load_all()
        return sorted(self.provided(kind))

    def get(self, kind: str, name: str) -> Any:
        """The spec of ``kind`` called ``name``, or a :class:`PluginError` that says what to do."""
        label = {"compute": "compute backend", "storage": "storage backend", "monitor": "monitor"}[kind]
        if not isinstance(name, str) or not name:
            raise PluginError(f"{label} name must be a non-empty string, got {name!r}")
        provided = self.provided(kind)
        if name not in provided:  # not a built-in: look at the installed plugins
            self.load_all()
            provided = self.provided(kind)
        if name in provided:
            claims = provided[name]
            if len(claims) > 1:
                who = " and ".join(f"{c.distribution} (plugin {c.plugin_name!r})" for c in claims)
                raise PluginError(
                    f"{label} {name!r} is claimed by {who}; uninstall one of them"
                )
            return claims[0].spec
        failed = [p for p in self.problems() if p["kind"] == "failed"]
        dist = KNOWN_DISTRIBUTIONS.get(kind, {}).get(name)
        if dist:
            broken = [p for p in failed if _same_dist(p["distribution"], dist)]
            if broken:
                p = broken[0]
                raise PluginError(
                    f"{label} {name!r} comes from {p['distribution']} {p['version']}, which is installed "
                    f"but failed to load: {p['error']}; fix that (e.g. reinstall it), then retry"
                )
            raise BackendNotInstalledError(
                f"{label} {name!r} is not installed: pip install {dist}"
            )
        available = ", ".join(sorted(provided)) or "(none)"
        close = difflib.get_close_matches(name, list(provided) + list(KNOWN_DISTRIBUTIONS.get(kind, {})), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        note = ""
        if failed:
            listed = "; ".join(f"{p['name']!r} from {p['distribution']} {p['version']} ({p['error']})" for p in failed)
            note = f" Plugins that failed to load (one may provide it): {listed}; see `wren plugins`."
        if not getattr(self.pm, "_wren_pending_eps", True) and not getattr(self.pm, "_wren_dists", {}) and \
                os.environ.get("WREN_DISABLE_PLUGINS", "").lower() in ("1", "true", "yes"):
            note += " (WREN_DISABLE_PLUGINS is set: only the built-ins are loaded)"
        raise PluginError(f"unknown {label} {name!r}; choose one of: {available}.{hint}{note}")

    def problems(self) -> list[dict[str, str]]:
        """Entry points that failed to load (``kind`` ``"failed"``) or whose name another
        distribution declared first (``"duplicate"``): ``name``, ``distribution``,
        ``version``, ``error`` (what happened and what to do)."""
        self.load_all()
        return list(getattr(self.pm, "_wren_problems", []))

    def section_names(self) -> set[str]:
        """Every config section name a plugin (installed or known) may own."""
        self.load_all()
        names = {"wren"}
        for kind in self.KINDS:
            names.update(self.provided(kind))
            names.update(KNOWN_DISTRIBUTIONS.get(kind, {}))
        return names

    def config_class_for_section(self, section: str) -> type | None:
        self.load_all()
        for kind in self.KINDS:
            for provided in self.provided(kind).get(section, []):
                if provided.spec.config_class is not None:
                    return provided.spec.config_class
        return None

    def describe(self) -> list[dict[str, str]]:
        """Rows for ``wren plugins``: what each plugin provides, then one row per problem
        (``kind`` ``"failed"`` or ``"duplicate"``, with ``error``)."""
        self.load_all()
        rows = []
        for kind in self.KINDS:
            for name, claims in sorted(self.provided(kind).items()):
                for c in claims:
                    rows.append(
                        {
                            "kind": kind,
                            "name": name,
                            "distribution": c.distribution,
                            "version": c.version,
                            "plugin": c.plugin_name,
                            "conflict": "yes" if len(claims) > 1 else "",
                            "needs": _missing_extra(kind, name),
                        }
                    )
        for p in self.problems():
            rows.append({"kind": p["kind"], "name": p["name"], "distribution": p["distribution"],
                         "version": p["version"], "plugin": p["name"], "conflict": "",
                         "error": p["error"]})
        return rows


def _missing_extra(kind: str, name: str) -> str:
    """``"pip install 'wren-core[rabbitmq]'"`` when the plugin's optional extra is missing."""
    need = NEEDS_EXTRA.get((kind, name))
    if need is None:
        return ""
    import importlib.util

    return "" if importlib.util.find_spec(need[0]) else f"needs {need[0]}: pip install '{need[1]}'"


def _same_dist(a: str, b: str) -> bool:
    """Distribution names compare without case and ``-``/``_``/``.`` differences."""
    def norm(n: str) -> str:
        return n.lower().replace("_", "-").replace(".", "-")

    return norm(a) == norm(b.split("[", 1)[0])


def check_sections(sections: dict[str, Any], registry: PluginRegistry) -> None:
    """Reject config sections no plugin (installed or known) owns, suggesting the closest."""
    from wren.errors import ConfigError

    quick = {"wren"} | {n for kind in registry.KINDS for n in registry.provided(kind)}
    quick |= {n for names in KNOWN_DISTRIBUTIONS.values() for n in names}
    if all(section in quick for section in sections):
        return
    known = registry.section_names()
    for section in sections:
        if section not in known:
            close = difflib.get_close_matches(section, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown config section {section!r}{hint}; sections are named after the "
                f"plugins: {', '.join(sorted(known))}"
            )
