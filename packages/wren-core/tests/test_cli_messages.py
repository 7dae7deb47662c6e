"""The command line's messages: plugin commands, unreachable engines, empty runtime lists,
the effective configuration."""
import os
import subprocess
import sys
import textwrap

from wren import cli

PLUGIN = textwrap.dedent('''
    import wren

    def _cmd(args):
        if args.fail:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except ConnectionRefusedError as exc:
                raise RuntimeError("Error while fetching server API version") from exc
        print("fake plugin command ran")
        return 0

    @wren.hookimpl
    def wren_cli_commands(subparsers):
        p = subparsers.add_parser("fake-clean", help="a plugin's command")
        p.add_argument("--fail", action="store_true")
        p.set_defaults(func=_cmd)
''')


def _with_plugin(tmp_path):
    (tmp_path / "wren_fakeplug.py").write_text(PLUGIN)
    info = tmp_path / "wren_fakeplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wren-fakeplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[wren]\nfakeplug = wren_fakeplug\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env.pop("WREN_DISABLE_PLUGINS", None)
    return env


def run(env, *args):
    return subprocess.run([sys.executable, "-m", "wren.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_plugin_commands_exist_before_parsing(tmp_path):
    env = _with_plugin(tmp_path)
    r = run(env, "fake-clean")
    assert r.returncode == 0, r.stderr
    assert "fake plugin command ran" in r.stdout


def test_unreachable_engine_is_one_line_with_the_fix(tmp_path):
    env = _with_plugin(tmp_path)
    r = run(env, "fake-clean", "--fail")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach" in lines[0] and "start it" in lines[0], r.stderr


def test_other_errors_still_raise():
    assert cli._unreachable(ValueError("x")) is None


def test_runtime_list_on_a_backend_without_runtimes(capsys):
    assert cli.main(["runtime", "list"]) == 0
    assert "has no runtimes deployed" in capsys.readouterr().out


def test_config_show_all_prints_sections_in_use_with_defaults(capsys):
    assert cli.main(["config", "show", "--all"]) == 0
    out = capsys.readouterr().out
    assert "localhost:" in out and "worker_prefetch" in out and "func_size_warning" in out
    assert cli.main(["config", "show"]) == 0
    assert "worker_prefetch" not in capsys.readouterr().out
