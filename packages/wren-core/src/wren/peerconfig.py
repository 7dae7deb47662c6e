"""The config of PyWren for IBM Cloud 1.x (``~/.pywren_config``) and Lithops
(``LITHOPS_CONFIG_FILE``, ``~/.lithops/config``), turned into wren's.

:func:`wren.config.load_config` reads them when wren has no config file of its own, and a
config dict with a ``lithops`` or ``pywren`` section (and no ``wren`` one) is translated the
same way. A warning names every key translated and every key ignored; ``docs/migrating.md``
has the full table.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any
from collections.abc import Mapping

#: Keys of the peers' main section -> key of wren's ``wren`` section (``None``: ignored).
MAIN_KEYS: dict[str, str | None] = {
    "backend": "backend", "compute_backend": "backend",
    "storage": "storage", "storage_backend": "storage",
    "log_level": "log_level",
    "execution_timeout": "runtime_timeout", "runtime_timeout": "runtime_timeout",
    "runtime": "runtime", "runtime_memory": "runtime_memory",
    "data_cleaner": "clean_on_exit",
    "monitoring": "monitoring",
    "monitoring_interval": "monitor_interval",
    "data_limit": "data_limit",
    "workers": "max_workers", "max_workers": "max_workers",
    "retries": "retries",
    "mode": None, "type": None, "chunksize": None, "customized_runtime": None, "invoke_pool_threads": None,
    "include_modules": None, "exclude_modules": None, "rabbitmq_monitor": None, "storage_bucket": None,
    "remote_invoker": None, "log_format": None, "log_stream": None, "log_filename": None,
}

#: Plugin sections wren knows: their keys kept as they are, and the peers' renames.
SECTIONS: dict[str, tuple[frozenset[str], dict[str, str]]] = {
    "ibm_cf": (frozenset({"region", "endpoint", "namespace", "namespace_id", "api_key", "runtime", "runtime_memory",
                          "runtime_timeout", "max_workers", "remote_invoker", "insecure"}), {}),
    "openwhisk": (frozenset({"endpoint", "namespace", "api_key", "insecure", "runtime", "runtime_memory",
                             "runtime_timeout", "max_workers", "remote_invoker"}), {}),
    "ibm_cos": (frozenset({"endpoint", "storage_bucket", "region", "access_key_id", "secret_access_key", "api_key",
                           "service_instance_id"}),
                {"access_key": "access_key_id", "secret_key": "secret_access_key"}),
    "localhost": (frozenset({"worker_processes", "storage_bucket"}), {}),
    "rabbitmq": (frozenset({"amqp_url"}), {}),
}


def peer_config_file() -> tuple[Path | None, str]:
    """The peer's config file to read, and whose it is (``lithops``, ``pywren``)."""
    named = os.environ.get("LITHOPS_CONFIG_FILE")
    if named:
        return Path(named).expanduser(), "lithops"
    home = Path.home()
    for path, peer in ((home / ".lithops" / "config", "lithops"), (home / ".lithops" / "config.yaml", "lithops"),
                       (home / ".pywren_config", "pywren")):
        if path.is_file():
            return path, peer
    return None, ""


def is_peer_config(data: Mapping[str, Any]) -> bool:
    return "wren" not in data and ("lithops" in data or "pywren" in data)


def translate(data: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """wren's config sections from a peer's; warns naming what was translated and ignored."""
    main_name = "lithops" if "lithops" in data else "pywren"
    main = dict(data.get(main_name) or {})
    out: dict[str, dict[str, Any]] = {"wren": {}}
    done: list[str] = []
    ignored: list[str] = []
    for key, value in main.items():
        target = MAIN_KEYS.get(key)
        if key == "rabbitmq_monitor" and value:
            out["wren"]["monitoring"] = "rabbitmq"
            done.append(f"{main_name}.{key} -> wren.monitoring: rabbitmq")
        elif target is None:
            if key != "storage_bucket":
                ignored.append(f"{main_name}.{key}")
        elif not (key == "log_level" and value is False):  # Lithops' "no logging"
            out["wren"][target] = value
            done.append(f"{main_name}.{key} -> wren.{target}")
    storage = out["wren"].get("storage") or "ibm_cos"
    if main.get("storage_bucket"):
        out.setdefault(storage, {})["storage_bucket"] = main["storage_bucket"]
        done.append(f"{main_name}.storage_bucket -> {storage}.storage_bucket")
    ibm = dict(data.get("ibm") or {})  # Lithops: the IAM key shared by IBM services
    for section, values in data.items():
        if section in (main_name, "ibm"):
            continue
        if section not in SECTIONS or not isinstance(values, Mapping):
            ignored.append(f"{section} (whole section)")
            continue
        known, renames = SECTIONS[section]
        for key, value in values.items():
            target = renames.get(key, key)
            if target in known:
                out.setdefault(section, {})[target] = value
                if target != key:
                    done.append(f"{section}.{key} -> {section}.{target}")
            else:
                ignored.append(f"{section}.{key}")
    if ibm.get("iam_api_key"):
        for section in ("ibm_cf", "ibm_cos"):
            if section in out or out["wren"].get("backend") == section or storage == section:
                out.setdefault(section, {}).setdefault("api_key", ibm["iam_api_key"])
                done.append(f"ibm.iam_api_key -> {section}.api_key")
    ignored += [f"ibm.{k}" for k in ibm if k != "iam_api_key"]
    parts = [f"read {main_name}'s config from {origin} as wren's"]
    if done:
        parts.append("translated: " + ", ".join(done))
    if ignored:
        parts.append("ignored (no wren equivalent, see docs/migrating.md): " + ", ".join(ignored))
    warnings.warn("; ".join(parts), UserWarning, stacklevel=3)
    return out
