"""Packaging rules for every distribution (packages/* and examples/*), checked by ``nox -s lint``:

- a LICENSE file identical to the repository's (Apache-2.0), named in ``license-files``, and
  (with ``--build``) present in the built wheel and sdist;
- classifiers (including the license's) and ``[project.urls]``;
- every first-party dependency with the compatible-version bound of the current release
  (``wren-core>=0.1,<0.2`` while wren-core is 0.1.x; ``nox -s version`` keeps them in step);
- README links that work on a package index page (absolute URLs or in-page anchors only).

    python tools/check_packaging.py [--build]
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIRST_PARTY = re.compile(r"^(wren-core|wren-storage-[a-z0-9-]+|wren-backend-[a-z0-9-]+)(\[[^\]]*\])?(.*)$")
RELATIVE_LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)]+)\)")


def compatible_bound(version: str) -> str:
    """``>=X.Y,<X.(Y+1)`` for 0.x releases, ``>=X.Y,<(X+1)`` from 1.0 on."""
    major, minor = (int(p) for p in version.split(".")[:2])
    upper = f"0.{minor + 1}" if major == 0 else f"{major + 1}"
    return f">={major}.{minor},<{upper}"


def core_version() -> str:
    text = (ROOT / "packages" / "wren-core" / "src" / "wren" / "version.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    assert match, "no __version__ in wren/version.py"
    return match.group(1)


def distributions() -> list[pathlib.Path]:
    return sorted(p.parent for p in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")])


def problems_of(folder: pathlib.Path, bound: str) -> list[str]:
    out = []
    where = folder.relative_to(ROOT)
    meta = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    license_file = folder / "LICENSE"
    if not license_file.is_file() or license_file.read_bytes() != (ROOT / "LICENSE").read_bytes():
        out.append(f"{where}: LICENSE missing or different from the repository's (cp LICENSE {where}/)")
    if "LICENSE" not in meta.get("license-files", []):
        out.append(f'{where}: pyproject.toml needs license-files = ["LICENSE"]')
    classifiers = meta.get("classifiers", [])
    if "License :: OSI Approved :: Apache Software License" not in classifiers or not any(
        c.startswith("Programming Language :: Python :: 3.") for c in classifiers
    ):
        out.append(f"{where}: classifiers need the license and the Python versions")
    if not {"Homepage", "Source"} <= set(meta.get("urls", {})):
        out.append(f"{where}: [project.urls] needs Homepage and Source")
    requirements = list(meta.get("dependencies", []))
    for extra in meta.get("optional-dependencies", {}).values():
        requirements += extra
    for req in requirements:
        m = FIRST_PARTY.match(req.replace(" ", ""))
        if m and m.group(3) != bound:
            out.append(f"{where}: first-party dependency {req!r} must be bounded {m.group(1)}{bound}")
    readme = folder / meta.get("readme", "README.md")
    for n, line in enumerate(readme.read_text().splitlines(), 1):
        for target in RELATIVE_LINK.findall(line):
            out.append(f"{readme.relative_to(ROOT)}:{n}: relative link {target!r} breaks on a package index page")
    return out


def build_problems(folder: pathlib.Path) -> list[str]:
    where = folder.relative_to(ROOT)
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "hatchling", "build", "-d", out], cwd=folder, check=True, capture_output=True)
        found = []
        for built in pathlib.Path(out).iterdir():
            if built.name.endswith(".whl"):
                names = zipfile.ZipFile(built).namelist()
            else:
                with tarfile.open(built) as tar:
                    names = tar.getnames()
            if not any(n.endswith("/LICENSE") for n in names):
                found.append(f"{where}: {built.name} has no LICENSE")
        if len(list(pathlib.Path(out).iterdir())) < 2:
            found.append(f"{where}: expected a wheel and an sdist")
        return found


def main(argv: list[str]) -> int:
    bound = compatible_bound(core_version())
    found: list[str] = []
    folders = distributions()
    for folder in folders:
        found += problems_of(folder, bound)
        if "--build" in argv:
            found += build_problems(folder)
    for line in found:
        print(line)
    print(f"checked {len(folders)} distribution(s){' (built)' if '--build' in argv else ''}: {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
