"""Plugins read only wren's public contract: fail when a plugin package (or an example plugin)
imports a private wren name (``wren._x``, or ``_name`` from a wren module) or reaches one
through attributes (``wren.x._y``).

    python tools/check_plugin_imports.py packages/wren-backend-*/src examples/*/src
"""
from __future__ import annotations

import ast
import pathlib
import sys


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def _attribute_chain(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id == "wren":
        return ".".join(["wren", *reversed(parts)])
    return None


def violations(path: pathlib.Path) -> list[str]:
    out = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "wren" and _private(alias.name):
                    out.append(f"{path}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "wren":
            if _private(node.module):
                out.append(f"{path}:{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    out.append(f"{path}:{node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Attribute):
            chain = _attribute_chain(node)
            if chain and _private(chain):
                out.append(f"{path}:{node.lineno}: {chain}")
    return out


def main(folders: list[str]) -> int:
    found = []
    files = 0
    for folder in folders:
        for path in sorted(pathlib.Path(folder).rglob("*.py")):
            files += 1
            found.extend(violations(path))
    for line in found:
        print(line)
    print(f"checked {files} file(s) of {len(folders)} plugin folder(s): {len(found)} private wren name(s) used")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
