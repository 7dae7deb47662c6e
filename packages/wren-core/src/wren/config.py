"""Configuration: where it comes from, in what order, and how each section is checked.

Sources, highest precedence first:

1. keyword arguments of :func:`wren.function_executor` (``backend=``, ``max_workers=``, ...);
2. the ``config`` dict passed to it;
3. environment variables: ``WREN_<KEY>`` for keys of the ``wren`` section (``WREN_BACKEND``,
   ``WREN_MAX_WORKERS``) and ``WREN_<SECTION>__<KEY>`` for a plugin's section
   (``WREN_IBM_COS__API_KEY``);
4. the YAML file named by ``WREN_CONFIG_FILE``, else ``~/.wren/config.yaml`` when it exists;
5. each section's defaults.

No file and no settings at all means the localhost backend with local storage.

The ``wren`` section holds executor settings (:class:`WrenConfig`). Every plugin owns the section
named after it and declares its keys as a dataclass; :func:`parse_section` turns a mapping into
that dataclass, converting strings from the environment, and rejects unknown keys (suggesting
the closest known one), wrong types and missing required values.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Mapping

from wren.errors import ConfigError

T = TypeVar("T")

SECRET = {"secret": True}
"""Field metadata marking a credential: masked by ``wren config show`` and never logged."""

_SECRET_WORDS = ("secret", "password", "token", "api_key", "apikey", "access_key", "auth")


def secret_field(default: Any = None) -> Any:
    """A dataclass field holding a credential (kept out of ``repr`` and masked on display)."""
    return dataclasses.field(default=default, repr=False, metadata=SECRET)


def is_secret_key(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


@dataclasses.dataclass
class WrenConfig:
    """The ``wren`` section: executor settings shared by every backend."""

    #: Compute backend name (``localhost``, ``ibm_cf``, ``openwhisk``, ``knative``, ``docker``).
    backend: str = "localhost"
    #: Storage backend name (``localhost``, ``ibm_cos``).
    storage: str = "localhost"
    #: Most calls of one executor running at once; ``None`` is the backend's own default.
    max_workers: int | None = None
    #: How the client learns that calls finished: ``storage`` (listing) or a monitor plugin.
    monitoring: str = "storage"
    #: Longest pause between two storage listings while waiting, in seconds.
    monitor_interval: float = 2.0
    #: Level of the ``wren`` logger (``DEBUG``, ``INFO``, ``WARNING``...).
    log_level: str | None = None
    #: Runtime (container image) name for container backends.
    runtime: str | None = None
    #: Memory of each worker in MB, for backends that set one.
    runtime_memory: int | None = None
    #: Default per-call timeout in seconds.
    runtime_timeout: float = 600.0
    #: Largest data of one call, in MiB (2**20 bytes); larger inputs must go through storage.
    data_limit: float = 4.0
    #: Calls whose data is at most this many bytes carry it in the invocation itself.
    inline_data_limit: int = 32 * 1024
    #: Results at most this many bytes travel inside the status record.
    inline_result_limit: int = 64 * 1024
    #: Remove the executor's temporary data when it is closed or the program exits.
    clean_on_exit: bool = True
    #: Show progress bars in ``wait``/``get_result`` (a widget in Jupyter, a bar elsewhere).
    progressbar: bool = True
    #: Warn before sending a function whose pickled size (closure and globals included) is
    #: over this many MiB.
    func_size_warning: float = 1.0
    #: Re-invoke a call up to this many times when it fails for a reason another try can fix
    #: (worker lost, out of memory, timeout, a transient platform or storage error).
    retries: int = 0
    #: Seconds the client keeps retrying its own storage requests (uploads, listings, result
    #: downloads) that fail for a transient reason (refused or reset connections, 5xx, SlowDown),
    #: backing off as call retries do; 0 turns it off.
    storage_retry_seconds: float = 60.0
    #: Also retry calls that raised these exception types (names, e.g. ``ConnectionError``).
    retry_on: list[str] = dataclasses.field(default_factory=list)
    #: Launch a backup copy of calls that run far longer than the job's median (stragglers).
    speculation: bool = False
    #: Fraction of a job's calls that must be done before stragglers get backup copies.
    speculation_quantile: float = 0.9
    #: A call is a straggler when it has run this many times the median call's duration.
    speculation_factor: float = 3.0

    def validate(self) -> None:
        if self.max_workers is not None and self.max_workers < 1:
            raise ConfigError(
                f"wren.max_workers must be at least 1 (got {self.max_workers}); "
                "leave it unset for the backend's default"
            )
        if self.runtime_timeout <= 0:
            raise ConfigError(f"wren.runtime_timeout must be > 0 seconds (got {self.runtime_timeout})")
        if self.monitor_interval <= 0:
            raise ConfigError(f"wren.monitor_interval must be > 0 (got {self.monitor_interval})")
        if self.retries < 0:
            raise ConfigError(f"wren.retries must be >= 0 (got {self.retries})")
        if not 0 < self.speculation_quantile <= 1:
            raise ConfigError(f"wren.speculation_quantile must be in (0, 1] (got {self.speculation_quantile})")
        if self.speculation_factor <= 1:
            raise ConfigError(f"wren.speculation_factor must be > 1 (got {self.speculation_factor})")
        if self.data_limit <= 0:
            raise ConfigError(f"wren.data_limit must be > 0 MB (got {self.data_limit})")
        if self.runtime_memory is not None and self.runtime_memory <= 0:
            raise ConfigError(f"wren.runtime_memory must be > 0 MB (got {self.runtime_memory})")
        if self.log_level is not None:
            import logging

            if not isinstance(logging.getLevelName(str(self.log_level).upper()), int):
                raise ConfigError(
                    f"wren.log_level {self.log_level!r} is not a logging level; "
                    "use DEBUG, INFO, WARNING, ERROR or CRITICAL"
                )


# -- parsing ------------------------------------------------------------------------------------

def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.strip().lower() in ("none", "null", "") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if tp is Any:
        return value
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        items = [_coerce(v, item_tp, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a whole number, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {type(value).__name__} {value!r}")
    return value


def parse_section(cls: type[T], section: str, data: Mapping[str, Any] | None) -> T:
    """Build the dataclass ``cls`` from the mapping of config section ``section``.

    Unknown keys, values of the wrong type and missing required keys raise
    :class:`~wren.errors.ConfigError` naming the section, the key and the fix. The dataclass may
    define ``validate(self)`` for checks across fields.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"unknown key {key!r} in config section {section!r}{_suggest(key, fields)}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            try:
                kwargs[name] = _coerce(data[name], hints[name], f"{section}.{name}")
            except ConfigError as exc:
                env = f"WREN_{section.upper()}__{name.upper()}"
                fix = f" (set in the config file, the config dict or the environment variable {env})"
                if f.metadata.get("secret") or is_secret_key(name):  # never echo a credential
                    raise ConfigError(f"{section}.{name} has the wrong type; check its value{fix}") from None
                raise ConfigError(f"{exc}{fix}") from None
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            env = f"WREN_{section.upper()}__{name.upper()}"
            raise ConfigError(
                f"config section {section!r} needs {name!r}: set it in the config file, "
                f"the config dict, or the environment variable {env}"
            )
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def masked(section: Mapping[str, Any], cls: type | None = None) -> dict[str, Any]:
    """A copy of a section for display, with credentials replaced by ``'****'``."""
    secret_names = set()
    if cls is not None and dataclasses.is_dataclass(cls):
        secret_names = {f.name for f in dataclasses.fields(cls) if f.metadata.get("secret")}
    out = {}
    for key, value in section.items():
        if value not in (None, "") and (key in secret_names or is_secret_key(key)):
            out[key] = "****"
        elif isinstance(value, str) and _URL_PASSWORD.search(value):
            out[key] = _URL_PASSWORD.sub(r"\1****@", value)  # amqp://user:****@host/
        else:
            out[key] = value
    return out


_URL_PASSWORD = re.compile(r"(://[^/@:\s]+:)[^@/\s]+@")


# -- loading ------------------------------------------------------------------------------------

def default_config_path() -> Path:
    return Path.home() / ".wren" / "config.yaml"


def _read_file() -> tuple[dict[str, Any], str | None]:
    named = os.environ.get("WREN_CONFIG_FILE")
    path = Path(named).expanduser() if named else default_config_path()
    if not path.exists():
        if named:
            raise ConfigError(
                f"WREN_CONFIG_FILE names {str(path)!r}, which does not exist; "
                "create it or unset the variable"
            )
        return _read_peer_file()
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    return data, str(path)


def _read_peer_file() -> tuple[dict[str, Any], str | None]:
    """No wren config file: Lithops' or PyWren for IBM Cloud's, translated (wren.peerconfig)."""
    from wren import peerconfig

    path, peer = peerconfig.peer_config_file()
    if path is None:
        return {}, None
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{peer}'s config file {str(path)!r} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{peer}'s config file {str(path)!r} must hold a mapping of sections")
    if not peerconfig.is_peer_config(data):
        data = {peer: {}, **data}  # sections only, no main section
    return peerconfig.translate(data, f"{path}"), str(path)


def _read_env() -> dict[str, dict[str, Any]]:
    wren_keys = {f.name for f in dataclasses.fields(WrenConfig)}
    out: dict[str, dict[str, Any]] = {}
    for name, value in os.environ.items():
        if not name.startswith("WREN_") or name == "WREN_CONFIG_FILE":
            continue
        rest = name[len("WREN_"):].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            out.setdefault(section, {})[key] = value
        elif rest in wren_keys:
            out.setdefault("wren", {})[rest] = value
    return out


def _merge(base: dict[str, Any], top: Mapping[str, Any], origin: str) -> None:
    for section, values in top.items():
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"config section {section!r} from {origin} must be a mapping of keys to values, "
                f"got {type(values).__name__}"
            )
        base.setdefault(section, {}).update(values)


@dataclasses.dataclass
class Config:
    """The merged configuration: the checked ``wren`` section and the raw plugin sections."""

    wren: WrenConfig
    sections: dict[str, dict[str, Any]]
    source_file: str | None = None

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.sections.get(name) or {})

    def __repr__(self) -> str:  # credentials masked: a config may end up in a log or traceback
        shown = {name: masked(section) for name, section in self.sections.items()}
        return f"Config(wren={self.wren!r}, sections={shown!r}, source_file={self.source_file!r})"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that :func:`load_config` turns back into this config (for workers)."""
        out = copy.deepcopy(self.sections)
        out["wren"] = dataclasses.asdict(self.wren)
        return out


def load_config(
    config: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    read_file: bool = True,
    read_env: bool = True,
) -> Config:
    """Merge every source (see the module docstring) and check the ``wren`` section."""
    merged: dict[str, dict[str, Any]] = {}
    source = None
    if read_file:
        file_data, source = _read_file()
        _merge(merged, file_data, f"file {source}")
    if read_env:
        _merge(merged, _read_env(), "the environment")
    if config is not None:
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"config must be a dict of sections, e.g. {{'wren': {{'backend': 'localhost'}}}}, "
                f"got {type(config).__name__}"
            )
        config = copy.deepcopy(dict(config))
        if "wren" not in config and ("lithops" in config or "pywren" in config):
            from wren import peerconfig

            config = peerconfig.translate(config, "the config dict")
        _merge(merged, config, "the config dict")
    if overrides:
        merged.setdefault("wren", {}).update({k: v for k, v in overrides.items() if v is not None})
    wren_section = parse_section(WrenConfig, "wren", merged.pop("wren", {}))
    return Config(wren=wren_section, sections=merged, source_file=source)
