"""Every hook a wren plugin can implement.

A plugin is a module (or object) with functions marked ``@wren.hookimpl``, registered through
the ``wren`` entry-point group of its distribution::

    # pyproject.toml of wren-backend-acme
    [project.entry-points.wren]
    acme = "wren_backend_acme.plugin"

    # wren_backend_acme/plugin.py
    import wren
    from wren_backend_acme.backend import AcmeBackend, AcmeConfig

    @wren.hookimpl
    def wren_compute_backends():
        return [wren.ComputeBackendSpec("acme", AcmeBackend, AcmeConfig)]

The built-in localhost backend and local storage come in through these same hooks.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import argparse

    from wren.compute.base import ComputeBackend
    from wren.monitor import Monitor
    from wren.storage.base import StorageBackend

PROJECT = "wren"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclasses.dataclass(frozen=True)
class ComputeBackendSpec:
    """A compute backend a plugin offers: ``backend=name`` picks it.

    :param name: the word users write in ``backend=`` and the name of its config section.
    :param backend_class: the :class:`~wren.compute.base.ComputeBackend` subclass to build.
    :param config_class: the dataclass of its config section (``None``: it has no keys).
    :param description: a one-line description for people (default: empty).
    """

    name: str
    backend_class: type[ComputeBackend]
    #: Dataclass of the plugin's config section (named ``name``); ``None`` if it has no keys.
    config_class: type | None = None
    description: str = ""


@dataclasses.dataclass(frozen=True)
class StorageBackendSpec:
    """A storage backend a plugin offers: ``storage=name`` picks it.

    :param name: the word users write in ``storage=`` and the name of its config section.
    :param backend_class: the :class:`~wren.storage.base.StorageBackend` subclass to build.
    :param config_class: the dataclass of its config section (``None``: it has no keys).
    :param description: a one-line description for people (default: empty).
    """

    name: str
    backend_class: type[StorageBackend]
    config_class: type | None = None
    description: str = ""


@dataclasses.dataclass(frozen=True)
class MonitorSpec:
    """A way for the client to learn that calls finished: ``monitoring=name`` picks it.

    :param name: the word users write in ``monitoring=`` and the name of its config section.
    :param monitor_class: the :class:`~wren.monitor.Monitor` subclass to build.
    :param config_class: the dataclass of its config section (``None``: it has no keys).
    :param description: a one-line description for people (default: empty).
    """

    name: str
    monitor_class: type[Monitor]
    config_class: type | None = None
    description: str = ""


@hookspec
def wren_compute_backends() -> list[ComputeBackendSpec]:  # type: ignore[empty-body]
    """Return the compute backends this plugin provides.

    Example::

        @wren.hookimpl
        def wren_compute_backends():
            return [wren.ComputeBackendSpec("acme", AcmeBackend, AcmeConfig, "Acme Functions")]
    """


@hookspec
def wren_storage_backends() -> list[StorageBackendSpec]:  # type: ignore[empty-body]
    """Return the storage backends this plugin provides.

    Example::

        @wren.hookimpl
        def wren_storage_backends():
            return [wren.StorageBackendSpec("acme_store", AcmeStorage, AcmeStoreConfig)]
    """


@hookspec
def wren_monitors() -> list[MonitorSpec]:  # type: ignore[empty-body]
    """Return the job monitors this plugin provides (ways to learn of finished calls).

    Example::

        @wren.hookimpl
        def wren_monitors():
            return [wren.MonitorSpec("kafka", KafkaMonitor, KafkaConfig)]
    """


@hookspec
def wren_cli_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add subcommands to the ``wren`` command line.

    Each parser should ``set_defaults(func=handler)``; ``handler(args)`` returns the exit code.

    Example::

        @wren.hookimpl
        def wren_cli_commands(subparsers):
            p = subparsers.add_parser("acme-login", help="log in to Acme")
            p.set_defaults(func=lambda args: 0)
    """


# Record types re-exported for plugin authors.
__all__ = [
    "ComputeBackendSpec",
    "MonitorSpec",
    "StorageBackendSpec",
    "hookimpl",
    "hookspec",
    "wren_cli_commands",
    "wren_compute_backends",
    "wren_monitors",
    "wren_storage_backends",
]
