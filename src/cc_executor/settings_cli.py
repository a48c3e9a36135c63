"""Command-line flags generated from `Settings`, so that a new field needs no edit here.

Each field is `--<name-with-dashes>`; a bool field is `--<name>` / `--no-<name>`; a list field
(`allow`, `allow_origin`) is repeatable and adds to the list from the environment and `.env`
(so `--allow echo` keeps `claude`). A flag's value goes to `Settings` as the string given, like
an environment variable, so `--max-buffer 8M` and `CC_EXECUTOR_MAX_BUFFER=8M` are read by the
same validator. Each value is checked while the flags are parsed, so a bad one stops argparse
with the flag and the setting named (`argument --max-buffer: max_buffer: not a size: 'x'
...`, exit 2), not a traceback.

`--env-file` is the only flag that is not a setting: it says where the settings are read from.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from .settings import ENV_PREFIX, SIZE_FIELDS, Settings, default_text

EPILOG = (f"Every flag is also {ENV_PREFIX}<NAME> in the environment and a line of the "
          "--env-file; a flag wins over the environment, which wins over the file. A repeated "
          "list flag adds to the list the environment or the file gives.")


def bare_type(field: FieldInfo) -> object:
    """The field's annotation without `| None`: an unset optional is not a kind of its own."""
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return inner[0] if len(inner) == 1 else annotation
    return annotation


def field_kind(field: FieldInfo) -> str:
    """`bool`, `list` or `value`: which kind of flag a field gets."""
    annotation = bare_type(field)
    if annotation is bool:
        return "bool"
    if typing.get_origin(annotation) is list:
        return "list"
    return "value"


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def flag_help(name: str, field: FieldInfo) -> str:
    """The field's description (the one source of its docs), then its variable and default."""
    kind = field_kind(field)
    shown = default_text(name) or ("none" if kind == "list" else "unset")
    if kind == "bool":
        shown = "on" if shown == "1" else "off"
    text = f"{field.description} ({ENV_PREFIX}{name.upper()}, default {shown})"
    if kind == "list":
        text += "; repeatable, each adds one"
    return text.replace("%", "%%")  # argparse %-formats help strings


def error_text(err: Mapping, value: object | None = None) -> str:
    """One pydantic error as a sentence: the validator's own message, without pydantic's
    "Value error, " prefix, with the rejected value when the message does not show it."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if value is not None and repr(value) not in msg:
        msg += f": {value!r}"
    return msg


def checker(name: str, kind: str) -> Callable[[str], str]:
    """An argparse `type` that validates one flag's string with `Settings` and returns it
    unchanged: the value is read again, with the environment, by `build_settings`."""

    def check(value: str) -> str:
        try:
            Settings(**{name: [value] if kind == "list" else value})
        except ValidationError as e:
            mine = [err for err in e.errors() if err["loc"][:1] == (name,)]
            if mine:
                raise argparse.ArgumentTypeError(f"{name}: {error_text(mine[0], value)}") from None
        return value

    check.__name__ = name  # argparse's fallback message says "invalid <name> value"
    return check


def add_setting_flag(parser: argparse.ArgumentParser, name: str, field: FieldInfo) -> None:
    """One field's flag. Its default is None, meaning "not given": the environment decides."""
    kind = field_kind(field)
    helptext = flag_help(name, field)
    if kind == "bool":
        parser.add_argument(flag_name(name), action=argparse.BooleanOptionalAction,
                            default=None, help=helptext)
        return
    parser.add_argument(flag_name(name), action="append" if kind == "list" else "store",
                        type=checker(name, kind), default=None, metavar=metavar(name, field),
                        help=helptext)


def metavar(name: str, field: FieldInfo) -> str | None:
    """The field's own (`json_schema_extra={"metavar": ...}`), else one from its type, so
    `--max-jobs-per-connection N` does not repeat its name; None lets argparse use the name."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("metavar"):
        return str(extra["metavar"])
    if name in SIZE_FIELDS:
        return "SIZE"
    by_type: dict[object, str] = {int: "N", float: "NUM", Path: "PATH"}
    return by_type.get(bare_type(field))


def build_parser(prog: str = "python -m cc_executor",
                 description: str | None = None) -> argparse.ArgumentParser:
    """Every field of `Settings` as a flag, plus `--env-file`."""
    # A short usage line: the full one lists every setting, and argparse prints it before each
    # error, burying the one line that says what is wrong.
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=EPILOG,
                                     usage="%(prog)s [--SETTING [VALUE] ...] [--env-file PATH]")
    for name, field in Settings.model_fields.items():
        add_setting_flag(parser, name, field)
    parser.add_argument("--env-file", default=".env", metavar="PATH",
                        help="dotenv file to read, again on SIGHUP (default .env)")
    return parser


def build_settings(ns: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from the parsed flags, over the environment (`environ`, default
    os.environ), over `ns.env_file`. Called again on SIGHUP, so it reads both afresh."""
    given = {name: getattr(ns, name) for name in Settings.model_fields
             if getattr(ns, name, None) is not None}
    lists = [name for name in given if field_kind(Settings.model_fields[name]) == "list"]
    if lists:
        base = Settings.from_env(environ=environ, dotenv_path=ns.env_file)
        for name in lists:
            given[name] = [*getattr(base, name), *given[name]]
    return Settings.from_env(environ=environ, dotenv_path=ns.env_file, **given)


def explain(error: ValueError) -> str:
    """A settings error for a person: each bad field as its variable (the flags were checked
    already, so the value came from the environment or the file) and what is wrong with it."""
    if not isinstance(error, ValidationError):
        return str(error)
    return "; ".join(
        f"{err['loc'][0]} ({ENV_PREFIX}{str(err['loc'][0]).upper()}): "
        f"{error_text(err, err.get('input'))}"
        if err["loc"] else error_text(err)
        for err in error.errors())
