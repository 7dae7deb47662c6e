"""The wren plugin module (entry point ``docker`` in the ``wren`` group)."""
from __future__ import annotations

import argparse
import json

import wren


@wren.hookimpl
def wren_compute_backends() -> list[wren.ComputeBackendSpec]:
    from wren_backend_docker.backend import DockerBackend
    from wren_backend_docker.config import DockerConfig

    return [wren.ComputeBackendSpec("docker", DockerBackend, DockerConfig, "worker containers on a Docker engine")]


def _cmd_docker_clean(args: argparse.Namespace) -> int:
    from wren.config import load_config, parse_section

    from wren_backend_docker.backend import remove_wren_containers
    from wren_backend_docker.config import DockerConfig

    cfg = load_config()
    section = parse_section(DockerConfig, "docker", cfg.section("docker"))
    removed = remove_wren_containers(section, only_orphans=not args.all)
    if args.json:
        print(json.dumps({"removed_containers": removed}))
    else:
        print(f"removed {len(removed)} wren container(s)")
    return 0


@wren.hookimpl
def wren_cli_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "docker-clean",
        help="remove wren's worker containers left by clients that are gone (--all: every one)",
    )
    p.add_argument("--all", action="store_true", help="also containers of running clients on this machine")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_docker_clean)
