"""Sessions for the Wren monorepo. ``nox`` runs the default sessions: the whole test suite.

    nox                      # tests of every package, core alone, lint
    nox -s tests-wren-core   # one package
    nox -s bench             # benchmarks (not part of the default run)
    nox -s bench_peers       # wren against ProcessPoolExecutor, Dask, Ray, Lithops (installs them)
"""
from __future__ import annotations

import pathlib
import re

import nox

ROOT = pathlib.Path(__file__).parent
#: The first-party distributions, in install order (core first).
PACKAGES = [
    "wren-core",
    "wren-storage-cos",
    "wren-backend-openwhisk",
    "wren-backend-ibmcf",
    "wren-backend-knative",
    "wren-backend-docker",
    "wren-backend-codeengine",
]
EXISTING = [p for p in PACKAGES if (ROOT / "packages" / p / "pyproject.toml").exists()]
PYTHON = None  # the interpreter nox runs on (CI: the machine's Python)

nox.options.sessions = [f"tests-{p}" for p in EXISTING] + ["core_alone", "notebook", "lint", "types"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _local_requirements(package: str) -> list[str]:
    """The first-party packages ``package`` needs, as local paths (core first)."""
    text = (ROOT / "packages" / package / "pyproject.toml").read_text()
    needed = [p for p in EXISTING if p != package and re.search(rf'"{re.escape(p)}[\[>=<~ "]', text)]
    return [str(ROOT / "packages" / p) for p in needed]


for _package in EXISTING:

    @nox.session(name=f"tests-{_package}", python=PYTHON)
    def _tests(session: nox.Session, package: str = _package) -> None:
        """Run the package's tests with its [test] extra installed."""
        local = _local_requirements(package)
        if local:
            session.install(*local)
        session.install(f"{ROOT / 'packages' / package}[test]")
        args = session.posargs or ["-q", "-rs"]
        # testsupport/: starters for the real servers tests use (S3, Docker engine, RabbitMQ)
        env = {"PYTHONPATH": str(ROOT / "testsupport")}
        session.run("pytest", str(ROOT / "packages" / package / "tests"), *args, env=env)


@nox.session(python=PYTHON)
def notebook(session: nox.Session) -> None:
    """Run examples/notebook.ipynb in a real Jupyter kernel (nbclient) and check its outputs:
    the progress widget, inline plots, a later plain matplotlib plot, a remote traceback.
    The executed notebook is kept in .nox/notebook-executed.ipynb."""
    session.install(f"{ROOT / 'packages' / 'wren-core'}[test]", "nbclient", "nbformat", "ipykernel", "ipywidgets")
    env = {"PYTHONPATH": str(ROOT / "testsupport"), "WREN_NOTEBOOK_OUT": str(ROOT / ".nox" / "notebook-executed.ipynb")}
    session.run("pytest", str(ROOT / "packages" / "wren-core" / "tests" / "test_notebook.py"), "-q", "-rs", env=env)


@nox.session(python=PYTHON)
def core_alone(session: nox.Session) -> None:
    """Install wren-core from its own wheel with no plugin and prove it stands alone."""
    wheel_dir = session.create_tmp()
    session.run("pip", "wheel", "--no-deps", "-w", wheel_dir, str(ROOT / "packages" / "wren-core"))
    wheels = sorted(pathlib.Path(wheel_dir).glob("wren_core-*.whl"))
    session.install(str(wheels[-1]))
    session.run("wren", "hello", env={"WREN_LOCALHOST__STORAGE_ROOT": str(pathlib.Path(wheel_dir) / "storage")})
    session.run("wren", "plugins")
    session.run(
        "python", "-c",
        "import importlib.util as u, sys; bad=[m for m in ('docker','kubernetes','ibm_boto3','requests','pika') "
        "if u.find_spec(m)]; sys.exit(f'wren-core pulled in {bad}' if bad else 0)",
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over every package; wren-core's layers (import-linter contract in its pyproject);
    plugins use only wren's public names."""
    core = ROOT / "packages" / "wren-core"
    session.install("ruff", "import-linter>=2.1")
    session.run("ruff", "check", *[str(ROOT / "packages" / p / "src") for p in EXISTING], str(ROOT / "bench"))
    session.run("lint-imports", "--no-cache", str(core / "pyproject.toml"), env={"PYTHONPATH": str(core / "src")})
    plugin_srcs = [str(ROOT / "packages" / p / "src") for p in EXISTING if p != "wren-core"]
    plugin_srcs += [str(p) for p in sorted((ROOT / "examples").glob("*/src"))]
    session.run("python", str(ROOT / "tools" / "check_plugin_imports.py"), *plugin_srcs)


@nox.session(python=PYTHON)
def types(session: nox.Session) -> None:
    """mypy over wren-core's src (strict on the layered modules, see its pyproject) and, with
    --strict, over a small user script using the public API."""
    core = ROOT / "packages" / "wren-core"
    session.install("mypy>=1.8", "types-PyYAML", str(core))
    session.run("mypy", "--config-file", str(core / "pyproject.toml"), str(core / "src" / "wren"))
    session.run("mypy", "--strict", "--ignore-missing-imports", str(core / "tests" / "typing" / "user_script.py"))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks in bench/ (each prints its figures against a baseline)."""
    session.install(*[str(ROOT / "packages" / p) for p in EXISTING])
    for script in sorted((ROOT / "bench").glob("bench_*.py")):
        if script.name != "bench_peers.py":  # its own session: it needs the peers installed
            session.run("python", str(script), *session.posargs)


#: The peers bench/bench_peers.py compares wren with (ProcessPoolExecutor and
#: multiprocessing.Pool come with Python).
BENCH_PEERS = ["distributed", "ray", "lithops"]


@nox.session(python=PYTHON)
def bench_peers(session: nox.Session) -> None:
    """wren's localhost backend against ProcessPoolExecutor, multiprocessing.Pool, Dask, Ray
    and Lithops on the workloads of issue 18 (not part of the default run):
    ``nox -s bench_peers -- --rounds 5 --systems wren,ppe,mp``."""
    session.install(str(ROOT / "packages" / "wren-core"), *BENCH_PEERS)
    session.run("python", str(ROOT / "bench" / "bench_peers.py"), *session.posargs)


@nox.session(python=False)
def version(session: nox.Session) -> None:
    """Set one version for every first-party distribution: ``nox -s version -- 0.2.0``."""
    if not session.posargs:
        session.error("usage: nox -s version -- NEW_VERSION")
    new = session.posargs[0]
    for p in EXISTING:
        for path in (ROOT / "packages" / p).rglob("version.py"):
            path.write_text(re.sub(r'__version__ = "[^"]+"', f'__version__ = "{new}"', path.read_text()))
        pyproject = ROOT / "packages" / p / "pyproject.toml"
        text = re.sub(r'(?m)^version = "[^"]+"', f'version = "{new}"', pyproject.read_text())
        pyproject.write_text(text)
    session.log(f"every distribution is now {new}")
