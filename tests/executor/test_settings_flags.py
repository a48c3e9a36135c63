"""Settings, flags and `.env` as one: every `Settings` field is a flag, a variable and a line.

The flags are generated from `Settings.model_fields` (`cc_executor.settings_cli`), so these tests
check the generator against the model rather than a list of names: a field added later is
covered with no edit here. The old hand-written parser is kept below as `old_settings`, the
oracle for "today's spellings parse to the same Settings as before".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from cc_executor.__main__ import build_settings, main, parse_args
from cc_executor.settings import ENV_PREFIX, Settings, default_text, env_example
from cc_executor.settings_cli import build_parser, explain, field_kind, flag_name

from conftest import REPO

PY = sys.executable
FIELDS = list(Settings.model_fields)
NO_FILE = "/nonexistent/cc_executor.env"


@pytest.fixture(autouse=True)
def no_setting_in_environ(monkeypatch):
    """A developer's CC_EXECUTOR_* variables must not change what these tests see."""
    for name in FIELDS:
        monkeypatch.delenv(ENV_PREFIX + name.upper(), raising=False)


def resolve(argv: list[str], environ: dict[str, str] | None = None, dotenv: str = NO_FILE):
    """Flags, then `environ` (none by default), then the file, as `python -m cc_executor`."""
    return build_settings(parse_args(["--env-file", dotenv, *argv]), environ=environ or {})


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


# --- every field everywhere ----------------------------------------------------------------

def test_every_field_has_a_flag_a_variable_and_an_env_example_line():
    helptext = build_parser().format_help()
    example = env_example()
    for name, field in Settings.model_fields.items():
        assert flag_name(name) in helptext, name
        assert env_name(name) in helptext, name
        assert f"\n{env_name(name)}=" in example, name
        if field_kind(field) == "bool":
            assert f"--no-{name.replace('_', '-')}" in helptext, name
    assert "--env-file" in helptext


def test_env_example_file_is_the_rendered_one():
    assert (REPO / ".env.example").read_text() == env_example()


def test_help_runs_as_a_command_and_shows_descriptions_and_defaults():
    proc = subprocess.run([PY, "-m", "cc_executor", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())  # argparse wraps lines
    assert "--max-buffer SIZE" in out and "(CC_EXECUTOR_MAX_BUFFER, default 4M)" in out
    assert "--throttle, --no-throttle" in out and "(CC_EXECUTOR_THROTTLE, default on)" in out
    assert "--allow CMD" in out and "default claude); repeatable" in out
    assert "Queue new jobs while the host is overloaded" in out


def test_each_shown_default_given_as_its_flag_gives_the_default():
    """`--help` and `.env.example` show values the flag and the variable accept (`4M`, `8`)."""
    defaults = Settings()
    assert all(getattr(parse_args([]), name) is None for name in FIELDS)  # None: not given
    for name, field in Settings.model_fields.items():
        shown = default_text(name)
        if field_kind(field) != "value" or name == "run_dir" or not shown:
            continue
        assert getattr(resolve([flag_name(name), shown]), name) == getattr(defaults, name), name
        assert getattr(resolve([], {env_name(name): shown}), name) == getattr(defaults, name)


# --- precedence ----------------------------------------------------------------------------

def test_flag_beats_environment_beats_dotenv(tmp_path):
    dotenv = tmp_path / "x.env"
    dotenv.write_text(f"{env_name('max_buffer')}=1M\n{env_name('max_jobs')}=3\n"
                      f"{env_name('max_queue')}=5\n")
    environ = {env_name("max_buffer"): "2M", env_name("max_jobs"): "4"}
    s = resolve(["--max-buffer", "8M"], environ, str(dotenv))
    assert (s.max_buffer, s.max_jobs, s.max_queue) == (8 * 1024**2, 4, 5)
    # The same through Settings.from_env alone: the flag is only an override on top.
    assert Settings.from_env(environ=environ, dotenv_path=dotenv).max_buffer == 2 * 1024**2
    assert Settings.from_env(environ={}, dotenv_path=dotenv).max_buffer == 1024**2


def test_reload_reads_the_file_again_and_the_flags_still_win(tmp_path):
    """What SIGHUP does: `build_settings(ns)` again with the same namespace."""
    dotenv = tmp_path / "x.env"
    dotenv.write_text(f"{env_name('max_load')}=0.01\n{env_name('queue_timeout')}=5\n")
    ns = parse_args(["--env-file", str(dotenv), "--queue-timeout", "7"])
    first = build_settings(ns, environ={})
    assert (first.max_load, first.queue_timeout) == ("0.01", 7.0)
    dotenv.write_text(f"{env_name('max_load')}=1000\n{env_name('queue_timeout')}=9\n")
    again = build_settings(ns, environ={})
    assert (again.max_load, again.queue_timeout) == ("1000", 7.0)
    dotenv.write_text(f"{env_name('max_load')}=banana\n")
    with pytest.raises(ValueError) as bad:
        build_settings(ns, environ={})
    assert explain(bad.value).startswith("max_load (CC_EXECUTOR_MAX_LOAD): not a load: 'banana'")


# --- kinds of flag -------------------------------------------------------------------------

@pytest.mark.parametrize("argv, env, want", [
    ([], {}, True),
    (["--no-throttle"], {}, False),
    (["--throttle"], {"throttle": "0"}, True),
    (["--no-throttle"], {"throttle": "1"}, False),
    ([], {"throttle": "off"}, False),
    (["--no-throttle", "--throttle"], {}, True),  # the last one given wins
])
def test_bool_flags_turn_on_and_off_over_the_environment(argv, env, want):
    environ = {env_name(k): v for k, v in env.items()}
    assert resolve(argv, environ).throttle is want


def test_every_bool_field_has_both_spellings():
    for name, field in Settings.model_fields.items():
        if field_kind(field) == "bool":
            flag = flag_name(name)
            on, off = resolve([flag]), resolve(["--no-" + flag[2:]])
            assert (getattr(on, name), getattr(off, name)) == (True, False), name


@pytest.mark.parametrize("text, size", [
    ("8M", 8 * 1024**2), ("65536", 65536), ("1.5GiB", int(1.5 * 1024**3)), ("512k", 512 * 1024),
])
def test_size_flags_read_like_the_environment(text, size):
    by_flag = resolve(["--max-buffer", text, "--min-free-mem", text])
    by_env = resolve([], {env_name("max_buffer"): text, env_name("min_free_mem"): text})
    assert by_flag.max_buffer == by_env.max_buffer == size
    assert by_flag.min_free_mem == size


def test_list_flags_add_to_the_environment_and_dotenv_lists(tmp_path):
    dotenv = tmp_path / "x.env"
    dotenv.write_text(f"{env_name('allow')}=claude,cat\n{env_name('allow_origin')}=http://a\n")
    s = resolve(["--allow", "echo", "--allow", "ls", "--allow-origin", "http://b"], {},
                str(dotenv))
    assert s.allow == ["claude", "cat", "echo", "ls"]
    assert s.allow_origin == ["http://a", "http://b"]
    # The environment replaces the file's list; the flags still add to it.
    s = resolve(["--allow", "echo"], {env_name("allow"): "true"}, str(dotenv))
    assert s.allow == ["true", "echo"]
    assert resolve([]).allow == ["claude"] and resolve(["--allow", "echo"]).allow == [
        "claude", "echo"]
    assert resolve([]).allow_origin == []


def test_optional_fields_are_unset_unless_given():
    assert resolve([]).default_timeout is None and resolve([]).token is None
    s = resolve(["--default-timeout", "30", "--token", "t", "--claude-path", "/bin/true"])
    assert (s.default_timeout, s.token, s.claude_path) == (30.0, "t", "/bin/true")


# --- today's spellings ---------------------------------------------------------------------

def old_settings(argv: list[str]) -> Settings:
    """The hand-written parser and build_settings this change replaced, verbatim in behaviour."""
    p = argparse.ArgumentParser()
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--token")
    p.add_argument("--allow", action="append")
    p.add_argument("--shell", action="store_true", default=None)
    p.add_argument("--allow-origin", action="append")
    p.add_argument("--log-dir")
    p.add_argument("--run-dir")
    p.add_argument("--max-load")
    p.add_argument("--min-free-mem")
    p.add_argument("--no-throttle", action="store_true")
    p.add_argument("--kill-grace", type=float)
    p.add_argument("--progress-interval", type=float)
    p.add_argument("--env-file", default=".env")
    ns = p.parse_args(argv)
    overrides = {
        "host": ns.host, "port": ns.port, "token": ns.token, "shell": ns.shell,
        "log_dir": ns.log_dir, "run_dir": ns.run_dir, "max_load": ns.max_load,
        "min_free_mem": ns.min_free_mem, "kill_grace": ns.kill_grace,
        "progress_interval": ns.progress_interval,
    }
    if ns.no_throttle:
        overrides["throttle"] = False
    base = Settings.from_env(dotenv_path=ns.env_file)
    if ns.allow:
        overrides["allow"] = [*base.allow, *ns.allow]
    if ns.allow_origin:
        overrides["allow_origin"] = [*base.allow_origin, *ns.allow_origin]
    return Settings.from_env(dotenv_path=ns.env_file, **overrides)


OLD_SPELLINGS = [
    [],
    ["--host", "0.0.0.0", "--port", "0", "--token", "s3cret"],
    ["--allow", "echo", "--allow", "cat", "--shell", "--allow-origin", "http://x",
     "--allow-origin", "http://y"],
    ["--log-dir", "L", "--run-dir", "R", "--max-load", "2/core", "--min-free-mem", "512M"],
    ["--no-throttle", "--kill-grace", "0.5", "--progress-interval", "0"],
    # tests/stress/service/managed.py ManagedService.argv
    ["--host", "127.0.0.1", "--port", "0", "--token", "tok", "--run-dir", "/tmp/r",
     "--log-dir", "/tmp/l", "--allow", "echo", "--allow", "python3", "--max-load", "1000"],
    # tests/service_fixture.py launch
    ["--log-dir", "/tmp/l", "--run-dir", "/tmp/r", "--port", "0", "--allow", "echo"],
]


@pytest.mark.parametrize("argv", OLD_SPELLINGS)
def test_old_spellings_give_the_same_settings(argv, tmp_path, monkeypatch):
    dotenv = tmp_path / "x.env"
    dotenv.write_text(f"{env_name('allow')}=claude,sleep\n{env_name('throttle')}=1\n")
    monkeypatch.setenv(env_name("allow_origin"), "http://env")
    monkeypatch.setenv(env_name("max_load"), "4")
    full = ["--env-file", str(dotenv), *argv]
    assert build_settings(parse_args(full)) == old_settings(full)


# --- bad values ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["--max-buffer", "x"], "argument --max-buffer: max_buffer: not a size: 'x'"),
    (["--port", "http"], "argument --port: port: Input should be a valid integer"),
    (["--max-load", "banana"], "argument --max-load: max_load: not a load: 'banana'"),
    (["--claude-capture", "tty"], "argument --claude-capture:"),
    (["--kill-grace", "0"], "argument --kill-grace: kill_grace: Input should be greater than 0"),
])
def test_a_bad_flag_value_names_the_flag_and_exits_2(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_a_bad_value_from_the_environment_names_the_variable_and_exits_2(monkeypatch, capsys):
    monkeypatch.setenv(env_name("max_frame"), "lots")
    assert main(["--env-file", NO_FILE]) == 2
    err = capsys.readouterr().err
    assert "cc_executor: invalid setting: max_frame (CC_EXECUTOR_MAX_FRAME): not a size: 'lots'" in err


def test_the_command_with_a_bad_flag_exits_2_naming_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {env_name(n) for n in FIELDS}}
    proc = subprocess.Popen([PY, "-m", "cc_executor", "--env-file", NO_FILE, "--max-buffer", "x"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.poll() == 2, err
    assert "--max-buffer: max_buffer: not a size: 'x'" in err and "Traceback" not in err
    assert out == ""
