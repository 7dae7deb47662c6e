"""The ``wren`` command.

Exit codes: 0 success, 1 the operation failed (the message says why and what to do), 2 bad
usage. Errors print one line on stderr; ``--json`` gives machine-readable output where a
script would read it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from typing import Any
from collections.abc import Callable

from wren.errors import WrenError

logger = logging.getLogger("wren.cli")


def _hello(name: str) -> str:
    import platform

    return f"Hello {name}! wren is working (worker {socket.gethostname()}, pid {os.getpid()}, Python {platform.python_version()})"


def _executor(args: argparse.Namespace, **kw: Any) -> Any:
    import wren

    return wren.function_executor(backend=args.backend, storage=args.storage, **kw)


def cmd_hello(args: argparse.Namespace) -> int:
    with _executor(args) as fexec:
        result = fexec.get_result(fexec.call_async(_hello, args.name), show_progressbar=False)
    print(result)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Run quick checks of the configured storage and compute backends."""
    from wren.testing import funcs

    results: list[dict[str, Any]] = []

    def check(name: str, fn: Callable[[], None]) -> None:
        t = time.perf_counter()
        try:
            fn()
            results.append({"check": name, "ok": True, "seconds": round(time.perf_counter() - t, 3)})
        except Exception as exc:
            results.append({"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"})

    fexec = _executor(args)
    st = fexec.storage_backend
    key = f"{fexec.prefix}/verify"

    def storage_roundtrip() -> None:
        body = os.urandom(4096)
        st.put_object(fexec.bucket, key, body)
        assert st.get_object(fexec.bucket, key) == body, "read back different bytes"
        assert st.get_object(fexec.bucket, key, (10, 19)) == body[10:20], "byte range mismatch"
        assert key in st.list_keys(fexec.bucket, fexec.prefix + "/"), "listing misses the object"
        st.delete_object(fexec.bucket, key)
        assert not st.object_exists(fexec.bucket, key), "delete did not remove the object"

    def compute_map() -> None:
        got = fexec.get_result(fexec.map(funcs.double, range(10)), show_progressbar=False)
        assert got == [2 * i for i in range(10)], f"wrong results {got}"

    def compute_exception() -> None:
        try:
            fexec.get_result(fexec.call_async(funcs.fail, 1), show_progressbar=False)
        except funcs.CustomError:
            return
        raise AssertionError("the remote exception did not come back")

    def compute_map_reduce() -> None:
        assert fexec.get_result(fexec.map_reduce(funcs.double, range(10), funcs.total), show_progressbar=False) == 90

    try:
        check(f"storage {st.name}: put/get/range/list/delete", storage_roundtrip)
        check(f"compute {fexec.backend}: map", compute_map)
        check(f"compute {fexec.backend}: remote exception", compute_exception)
        check(f"compute {fexec.backend}: map_reduce", compute_map_reduce)
    finally:
        fexec.close()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            mark = "ok  " if r["ok"] else "FAIL"
            extra = f"({r['seconds']} s)" if r["ok"] else r["error"]
            print(f"{mark} {r['check']} {extra}")
    return 0 if all(r["ok"] for r in results) else 1


def cmd_clean(args: argparse.Namespace) -> int:
    from wren.config import load_config
    from wren.keys import JOBS_PREFIX
    from wren.runtimes.metadata import STORAGE_PREFIX
    from wren.storage.client import build_storage

    cfg = load_config(None, {"storage": args.storage})
    st = build_storage(cfg)
    bucket = st.default_bucket
    removed = 0
    kept: list[str] = []
    if st.bucket_exists(bucket):
        from wren.client.lease import is_live

        executors = sorted({k[len(JOBS_PREFIX) + 1:].split("/", 1)[0] for k in st.list_keys(bucket, JOBS_PREFIX + "/")})
        for executor_id in executors:
            prefix = f"{JOBS_PREFIX}/{executor_id}"
            if not args.force and is_live(st, bucket, prefix):
                kept.append(executor_id)  # its client is alive: its jobs may still be running
                continue
            removed += st.delete_prefix(bucket, prefix + "/")
        if args.all:
            removed += st.delete_prefix(bucket, "wren.cloudobjects/")
            removed += st.delete_prefix(bucket, STORAGE_PREFIX)  # cached runtime metadata
    from wren.client import journal

    for rec in journal.list_records():  # nothing is left to reattach to
        if rec.get("storage") == st.name and rec.get("bucket") == bucket and rec["executor_id"] not in kept:
            journal.remove(rec["executor_id"])
    if args.all:
        cache = os.path.join(tempfile.gettempdir(), f"wren-modules-{os.getuid()}")
        shutil.rmtree(cache, ignore_errors=True)
    backend = _runtime_backend(args, with_storage=False)
    try:
        resources = backend.clean_resources(all=args.all)
    finally:
        backend.close()
    if args.json:
        print(json.dumps({"storage": st.name, "bucket": bucket, "removed_objects": removed, "kept_live_executors": kept,
                          "backend": backend.name, "removed_resources": resources}))
    else:
        print(f"removed {removed} object(s) from {st.name} bucket {bucket!r}")
        if kept:
            print(f"kept the data of {len(kept)} executor(s) still running ({', '.join(kept)}); "
                  "--force removes it too")
        for line in resources:
            print(f"removed {line}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from wren.config import WrenConfig, load_config, masked
    from wren.plugins import get_registry

    cfg = load_config()
    reg = get_registry()
    out: dict[str, Any] = {"wren": masked(cfg.to_dict()["wren"], WrenConfig)}
    for section, values in sorted(cfg.sections.items()):
        out[section] = masked(values, reg.config_class_for_section(section))
    if args.all:  # the sections in use, with their defaults
        out.update(_sections_in_use(cfg, reg, out))
    if args.json:
        print(json.dumps({"source_file": cfg.source_file, "config": out}, indent=2, default=str))
    else:
        import yaml

        print(f"# from: {cfg.source_file or 'no file (defaults and environment)'}")
        print(yaml.safe_dump(out, sort_keys=False).rstrip())
    return 0


def _sections_in_use(cfg: Any, reg: Any, shown: dict[str, Any]) -> dict[str, Any]:
    """The backend's, the storage's and the monitor's sections with every default filled in
    (secrets masked); a section that does not parse shows what is set and why."""
    import dataclasses

    from wren.config import masked, parse_section

    out: dict[str, Any] = {}
    for name in dict.fromkeys([cfg.wren.backend, cfg.wren.storage, cfg.wren.monitoring]):
        cls = reg.config_class_for_section(name)
        if cls is None:  # nothing to configure (the storage monitor), or shown as set
            continue
        try:
            values = dataclasses.asdict(parse_section(cls, name, cfg.section(name)))
        except Exception as exc:  # noqa: BLE001 - shown, not raised: this is a diagnostic
            values = {**cfg.section(name), "# incomplete": str(exc)}
        out[name] = masked(values, cls)
    return out


def cmd_logs(args: argparse.Namespace) -> int:
    """Print what the calls of a job printed (saved when its executor closed)."""
    from wren.client import journal

    root = journal.logs_dir()
    if not args.job:
        rows = sorted(
            (p.stat().st_mtime, f"{p.parent.name}/{p.stem}") for p in root.glob("*/*.log")
        ) if root.is_dir() else []
        if args.json:
            print(json.dumps([name for _, name in rows]))
        elif not rows:
            print("no saved logs yet: they are kept when an executor closes, for calls that printed something")
        else:
            for ts, name in rows[-50:]:
                print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))}  {name}")
        return 0
    executor_id, _, job_id = args.job.partition("/")
    files = sorted((root / executor_id).glob(f"{job_id or '*'}.log")) if (root / executor_id).is_dir() else []
    if not files:
        raise WrenError(
            f"no saved logs for {args.job!r}; give EXECUTOR_ID or EXECUTOR_ID/JOB_ID as listed by 'wren logs'"
        )
    if args.json:
        print(json.dumps({f"{executor_id}/{p.stem}": p.read_text() for p in files}, indent=2))
    else:
        for p in files:
            print(f"=== job {executor_id}/{p.stem}")
            print(p.read_text(), end="")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from wren.plugins import get_registry

    rows = get_registry().describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 1 if any(r.get("error") for r in rows) else 0
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        if r.get("error"):
            continue
        conflict = "  CONFLICT: claimed twice" if r["conflict"] else ""
        needs = f"  ({r['needs']})" if r.get("needs") else ""
        print(f"{r['kind']:<8} {r['name']:<{width}}  {r['distribution']} {r['version']}{conflict}{needs}")
    problems = [r for r in rows if r.get("error")]
    if problems:
        print(f"\n{len(problems)} plugin problem(s):")
        for r in problems:
            label = "FAILED to load" if r["kind"] == "failed" else "DUPLICATE entry point"
            print(f"  {label}: {r['name']!r} from {r['distribution']} {r['version']}: {r['error']}")
        return 1  # a CI check of the installed plugins fails
    return 0


def _runtime_backend(args: argparse.Namespace, with_storage: bool = True) -> Any:
    from wren.config import load_config, parse_section
    from wren.plugins import get_registry

    cfg = load_config(None, {"backend": args.backend})
    spec = get_registry().get("compute", cfg.wren.backend)
    section = parse_section(spec.config_class, cfg.wren.backend, cfg.section(cfg.wren.backend)) if spec.config_class else None
    backend = spec.backend_class(section, cfg.wren)
    if not with_storage:
        return backend
    try:  # runtime metadata is cached in the configured storage too, when there is one
        from wren.storage.client import build_storage

        backend.storage = build_storage(cfg)
    except Exception as exc:  # noqa: BLE001 - the runtime commands work without it
        logger.debug("no storage for the runtime metadata cache: %s", exc)
    return backend


def _close_backend(backend: Any) -> None:
    backend.close()
    if backend.storage is not None:
        backend.storage.close()


def cmd_runtime(args: argparse.Namespace) -> int:
    backend = _runtime_backend(args)
    try:
        if args.action == "build":
            options = {"push": True} if args.push else {}
            backend.build_runtime(args.name, dockerfile=args.file, **options)
            print(f"built runtime {args.name!r}")
        elif args.action in ("deploy", "update"):
            info = backend.deploy_runtime(args.name, memory=args.memory)
            print(json.dumps(info, default=str) if args.json else f"deployed runtime {args.name!r}: {info}")
        elif args.action == "list":
            rows = backend.list_runtimes()
            if args.json:
                print(json.dumps(rows, default=str, indent=2))
            elif not rows:
                print(f"backend {backend.name!r} has no runtimes deployed" + (
                    " (it runs calls in this machine's Python: nothing to deploy)" if backend.name == "localhost"
                    else "; deploy one with: wren runtime deploy NAME"))
            else:
                for r in rows:
                    print("  ".join(f"{k}={v}" for k, v in r.items()))
        elif args.action == "delete":
            backend.delete_runtime(args.name, memory=args.memory)
            print(f"deleted runtime {args.name!r}")
        elif args.action == "metadata":
            print(json.dumps(backend.runtime_metadata(args.name), indent=2, default=str))
    except NotImplementedError as exc:
        raise WrenError(str(exc)) from None
    finally:
        _close_backend(backend)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from wren.version import __version__

    parser = argparse.ArgumentParser(prog="wren", description="Run Python functions at scale with wren.")
    parser.add_argument("--version", action="version", version=f"wren {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-b", "--backend", help="compute backend (default: from config)")
        p.add_argument("-s", "--storage", help="storage backend (default: from config)")

    p = sub.add_parser("hello", help="run a function on the configured backend and print its result")
    common(p)
    p.add_argument("name", nargs="?", default="World")
    p.set_defaults(func=cmd_hello)

    p = sub.add_parser("verify", help="check that the configured storage and compute backends work")
    common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("clean", help="remove wren's temporary data from storage and what backends left behind")
    p.add_argument("-b", "--backend", help="compute backend (default: from config)")
    p.add_argument("-s", "--storage", help="storage backend (default: from config)")
    p.add_argument("--all", action="store_true", help="also cloud objects and local caches")
    p.add_argument("--force", action="store_true",
                   help="also the data of executors whose clients are still alive (they hold a lease)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("config", help="inspect the configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    cs = csub.add_parser("show", help="print the merged configuration, secrets masked")
    cs.add_argument("--json", action="store_true", help="machine-readable output")
    cs.add_argument("--all", action="store_true",
                    help="also the sections in use (backend, storage, monitor) with their defaults")
    cs.set_defaults(func=cmd_config_show)

    p = sub.add_parser("logs", help="show what the calls of a job printed")
    p.add_argument("job", nargs="?", help="EXECUTOR_ID or EXECUTOR_ID/JOB_ID (none: list jobs with logs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("plugins", help="list installed plugins with their distributions")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("runtime", help="build, deploy, list, update and delete runtimes")
    rsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, helptext in (
        ("build", "build a runtime image"),
        ("deploy", "deploy a runtime on the backend"),
        ("update", "redeploy a runtime"),
        ("delete", "delete a deployed runtime"),
        ("list", "list deployed runtimes"),
        ("metadata", "show what a runtime offers (Python, wren, modules)"),
    ):
        rp = rsub.add_parser(action, help=helptext)
        rp.add_argument("-b", "--backend", help="compute backend (default: from config)")
        if action != "list":
            rp.add_argument("name", nargs="?" if action == "metadata" else None)
        else:
            rp.set_defaults(name=None)
        if action == "build":
            rp.add_argument("-f", "--file", help="Dockerfile to build from")
            rp.add_argument("--push", action="store_true", help="push the image to the configured registry")
        else:
            rp.set_defaults(file=None, push=False)
        if action in ("deploy", "update", "delete"):
            rp.add_argument("--memory", type=int, help="memory in MB")
        else:
            rp.set_defaults(memory=None)
        rp.add_argument("--json", action="store_true", help="machine-readable output")
        rp.set_defaults(func=cmd_runtime)

    from wren.plugins import get_plugin_manager, load_entry_points

    pm = get_plugin_manager()
    load_entry_points(pm)  # plugins' commands (e.g. docker-clean) must exist before parsing
    pm.hook.wren_cli_commands(subparsers=sub)
    return parser


def _unreachable(exc: BaseException) -> str | None:
    """One line with the fix when ``exc`` (or what caused it) says an engine or endpoint could
    not be reached; None for any other error."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    for e in seen:
        name = type(e).__name__
        if isinstance(e, (ConnectionError, socket.gaierror, socket.timeout)) or name.endswith(
                ("ConnectionError", "DockerException", "NewConnectionError", "MaxRetryError")):
            detail = " ".join(str(exc).split())[:200]
            return (f"cannot reach the backend's engine or endpoint ({detail}); start it (e.g. the "
                    "Docker engine) or fix its address in the config (wren config show --all)")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except WrenError as exc:
        print(f"wren: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        unreachable = _unreachable(exc)
        if unreachable is None:
            raise
        print(f"wren: error: {unreachable}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wren: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
