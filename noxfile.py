"""Sessions for the Wren monorepo. ``nox`` runs the default sessions: the whole test suite.

    nox                      # setup, tests of every package, core alone, the example plugin,
                             # lint, types, then a summary of what was skipped and why
    nox -s tests-wren-core   # one package
    nox -s bench             # benchmarks (not part of the default run)
    nox -s bench_peers       # wren against ProcessPoolExecutor, Dask, Ray, Lithops (installs them)

``setup`` installs the Debian packages the suites need when they are missing and it may
(``tools/system-deps.sh``, shared with ``.ci/run``); ``summary`` lists every skipped test with
its reason and fails if a process started by the run is still running.
"""
from __future__ import annotations

import os
import pathlib
import re
import time
import uuid
import xml.etree.ElementTree as ET

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

#: Example third-party plugins (their own pyproject each), tested by ``example_plugin``.
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/pyproject.toml"))

nox.options.sessions = (["setup"] + [f"tests-{p}" for p in EXISTING]
                        + ["core_alone", "example_plugin", "notebook", "lint", "types", "summary"])
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

#: Every process a session starts carries this marker in its environment, so that ``summary``
#: finds any still running after the run (daemons that left the process tree included).
RUN_ID = os.environ.get("WREN_TEST_RUN") or uuid.uuid4().hex[:12]
#: JUnit reports of the test sessions, read by ``summary``.
REPORTS = ROOT / ".nox" / "_reports"


def _pytest_args(session: nox.Session, name: str) -> list[str]:
    """Report skips (-rs), write a JUnit report for the summary, fail on leftover processes."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    return ["-p", "wren_testsupport.leaks", f"--junitxml={REPORTS / name}.xml", "-o", "junit_family=xunit2",
            *(session.posargs or ["-q", "-rs"])]


@nox.session(python=False)
def setup(session: nox.Session) -> None:
    """Install the Debian packages the suites need (docker.io, debootstrap, rabbitmq-server)
    when missing and permitted (root or password-less sudo; WREN_NO_SYSTEM_INSTALL=1 skips);
    otherwise their suites skip and the summary says so. Starts a fresh report folder."""
    for old in REPORTS.glob("*.xml") if REPORTS.exists() else []:
        old.unlink()
    REPORTS.mkdir(parents=True, exist_ok=True)
    session.run("bash", str(ROOT / "tools" / "system-deps.sh"), external=True)


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
        # testsupport/: starters for the real servers tests use (S3, Docker engine, RabbitMQ)
        env = {"PYTHONPATH": str(ROOT / "testsupport"), "WREN_TEST_RUN": RUN_ID}
        # the notebook test runs in its own session, which installs the kernel it needs
        own = ["--ignore", str(ROOT / "packages" / package / "tests" / "test_notebook.py")] if package == "wren-core" else []
        session.run("pytest", str(ROOT / "packages" / package / "tests"), *own, *_pytest_args(session, f"tests-{package}"),
                    env=env)


@nox.session(python=PYTHON)
def notebook(session: nox.Session) -> None:
    """Run examples/notebook.ipynb in a real Jupyter kernel (nbclient) and check its outputs:
    the progress widget, inline plots, a later plain matplotlib plot, a remote traceback.
    The executed notebook is kept in .nox/notebook-executed.ipynb."""
    session.install(f"{ROOT / 'packages' / 'wren-core'}[test,notebook]", "nbclient", "nbformat", "ipykernel")
    env = {"PYTHONPATH": str(ROOT / "testsupport"), "WREN_NOTEBOOK_OUT": str(ROOT / ".nox" / "notebook-executed.ipynb"),
           "WREN_TEST_RUN": RUN_ID}
    session.run("pytest", str(ROOT / "packages" / "wren-core" / "tests" / "test_notebook.py"),
                *_pytest_args(session, "notebook"), env=env)


@nox.session(python=PYTHON)
def core_alone(session: nox.Session) -> None:
    """Install wren-core from its own wheel with no plugin and prove it stands alone."""
    wheel_dir = session.create_tmp()
    session.run("pip", "wheel", "--no-deps", "-w", wheel_dir, str(ROOT / "packages" / "wren-core"))
    wheels = sorted(pathlib.Path(wheel_dir).glob("wren_core-*.whl"))
    session.install(str(wheels[-1]))
    session.run("wren", "hello", env={"WREN_LOCALHOST__STORAGE_ROOT": str(pathlib.Path(wheel_dir) / "storage"),
                                      "WREN_TEST_RUN": RUN_ID})
    session.run("wren", "plugins")
    session.run(
        "python", "-c",
        "import importlib.util as u, sys; bad=[m for m in ('docker','kubernetes','ibm_boto3','requests','pika') "
        "if u.find_spec(m)]; sys.exit(f'wren-core pulled in {bad}' if bad else 0)",
    )


@nox.session(python=PYTHON)
def example_plugin(session: nox.Session) -> None:
    """Install wren-core and each example plugin from their folders, as a plugin author would,
    and run the example's own tests (it subclasses wren.testing.ComputeBackendConformance)."""
    for example in EXAMPLES:
        session.install(str(ROOT / "packages" / "wren-core"), f"{example}[test]")
        env = {"PYTHONPATH": str(ROOT / "testsupport"), "WREN_TEST_RUN": RUN_ID}
        session.run("pytest", str(example / "tests"), *_pytest_args(session, f"example-{example.name}"), env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over every package; wren-core's layers (import-linter contract in its pyproject);
    plugins use only wren's public names; packaging rules (tools/check_packaging.py)."""
    core = ROOT / "packages" / "wren-core"
    session.install("ruff", "import-linter>=2.1", "hatchling>=1.27")
    session.run("ruff", "check", *[str(ROOT / "packages" / p / "src") for p in EXISTING], str(ROOT / "bench"),
                *[str(e / "src") for e in EXAMPLES])
    session.run("lint-imports", "--no-cache", str(core / "pyproject.toml"), env={"PYTHONPATH": str(core / "src")})
    plugin_srcs = [str(ROOT / "packages" / p / "src") for p in EXISTING if p != "wren-core"]
    plugin_srcs += [str(p) for p in sorted((ROOT / "examples").glob("*/src"))]
    session.run("python", str(ROOT / "tools" / "check_plugin_imports.py"), *plugin_srcs)
    # LICENSE in every wheel and sdist, classifiers, URLs, first-party bounds, absolute README links
    session.run("python", str(ROOT / "tools" / "check_packaging.py"), "--build")


@nox.session(python=PYTHON)
def types(session: nox.Session) -> None:
    """mypy over wren-core's src (strict on the layered modules, see its pyproject) and, with
    --strict, over a small user script using the public API."""
    core = ROOT / "packages" / "wren-core"
    session.install("mypy>=1.8", "types-PyYAML", str(core))
    session.run("mypy", "--config-file", str(core / "pyproject.toml"), str(core / "src" / "wren"))
    session.run("mypy", "--strict", "--ignore-missing-imports", str(core / "tests" / "typing" / "user_script.py"))


def _run_processes(marker: str) -> list[tuple[int, str]]:
    """Processes whose environment carries ``WREN_TEST_RUN=marker`` (Linux /proc)."""
    needle = f"WREN_TEST_RUN={marker}".encode()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found.append((int(entry), f.read().replace(b"\0", b" ").decode(errors="replace").strip()))
        except OSError:
            continue
    return found


@nox.session(python=False)
def summary(session: nox.Session) -> None:
    """The end of ``nox``: tests run per session, every skipped test with its reason, and a
    failure if any process started by this run is still running."""
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    skipped: dict[str, list[str]] = {}
    lines = []
    for report in sorted(REPORTS.glob("*.xml")) if REPORTS.exists() else []:
        root = ET.parse(report).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in totals}
        for k in totals:
            totals[k] += counts[k]
        lines.append(f"  {report.stem:<34} {counts['tests']:>5} tests, {counts['failures'] + counts['errors']} failed, "
                     f"{counts['skipped']} skipped")
        for case in root.iter("testcase"):
            for skip in case.findall("skipped"):
                reason = (skip.get("message") or "no reason given").strip()
                skipped.setdefault(reason, []).append(f"{report.stem}: {case.get('classname')}.{case.get('name')}")
    session.log("tests per session:\n" + ("\n".join(lines) or "  (no reports: run the test sessions first)"))
    if skipped:
        out = [f"{totals['skipped']} test(s) SKIPPED, by reason:"]
        for reason, cases in sorted(skipped.items(), key=lambda kv: -len(kv[1])):
            out.append(f"  [{len(cases)}] {reason}")
            out += [f"        {c}" for c in cases[:5]] + ([f"        ... and {len(cases) - 5} more"] if len(cases) > 5 else [])
        session.warn("\n".join(out))
    else:
        session.log("no test was skipped")
    deadline = time.monotonic() + 15
    left = _run_processes(RUN_ID)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _run_processes(RUN_ID)
    if left:
        session.error(f"{len(left)} process(es) started by this run are still running:\n"
                      + "\n".join(f"  pid {pid}: {cmd[:200]}" for pid, cmd in left))
    session.log(f"{totals['tests']} tests, {totals['failures'] + totals['errors']} failed, {totals['skipped']} skipped; "
                "no process of this run is left running")


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
    """Set one version for every first-party distribution, and move every first-party
    dependency bound (packages and examples) to match: ``nox -s version -- 0.2.0`` gives
    ``wren-core>=0.2,<0.3``. ``tools/check_packaging.py`` (in ``nox -s lint``) checks both."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from check_packaging import FIRST_PARTY, compatible_bound

    if not session.posargs:
        session.error("usage: nox -s version -- NEW_VERSION")
    new = session.posargs[0]
    if not re.fullmatch(r"\d+\.\d+\.\d+(?:[a-z]+\d*)?", new):
        session.error(f"{new!r} is not a version like 0.2.0")
    bound = compatible_bound(new)

    def rebound(match: re.Match[str]) -> str:
        req = FIRST_PARTY.match(match.group(1))
        if req is None:
            return match.group(0)
        return f'"{req.group(1)}{req.group(2) or ""}{bound}"'

    for p in EXISTING:
        for path in (ROOT / "packages" / p).rglob("version.py"):
            path.write_text(re.sub(r'__version__ = "[^"]+"', f'__version__ = "{new}"', path.read_text()))
        pyproject = ROOT / "packages" / p / "pyproject.toml"
        text = re.sub(r'(?m)^version = "[^"]+"', f'version = "{new}"', pyproject.read_text())
        pyproject.write_text(text)
    for pyproject in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")]:
        lines, table, in_deps = [], "", False
        for line in pyproject.read_text().splitlines(keepends=True):
            if line.startswith("["):
                table = line.strip()
            if table == "[project]" and line.startswith("dependencies = ["):
                in_deps = True
            if (table == "[project]" and in_deps) or table == "[project.optional-dependencies]":
                line = re.sub(r'"(wren-[a-z0-9-]+(?:\[[^\]]*\])?[^"]*)"', rebound, line)
            if in_deps and line.rstrip().endswith("]"):
                in_deps = False
            lines.append(line)
        pyproject.write_text("".join(lines))
    session.log(f"every distribution is now {new}; first-party dependencies are bounded {bound}")
