"""
vorchd's settings for shell scripts (install.sh), read by the same code the daemon uses.

    python -m vorchd.config_cli get [--config FILE] KEY...
    python -m vorchd.config_cli check [DAEMON OPTIONS...]

C{get} prints the value of each KEY on a line of its own, in the order asked: a field of
L{vorchd.config.Settings} (C{port}, C{interface}, C{admin_port}, C{admin_passwd_file}, ...)
or a part of the Redis address (C{redis.host}, C{redis.port}, C{redis.db},
C{redis.password}). A value that is not set (no admin port, no password) is an empty line;
a mapping or a list is one line of JSON. The settings are read as the daemon reads them:
the ini (C{--config}, else C{$VORCHD_CONFIG}, else C{etc/vorchd.ini}), then C{VORCHD_PORT}
and C{VORCHD_REDIS}.

C{check} parses the options C{twistd vorchd} is given (C{--config}, C{--port},
C{--pm-file}, ...) with the plugin's own L{vorchd.tap.Options}: the settings and the three
input files, exactly as the daemon will at start-up, without starting anything.

Both exit 0 on success and 1 with the reason on stderr when the settings or a file are
wrong (an unknown KEY is a usage error: exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence

import attrs

from vorchd.config import ConfigError, RedisAddress, Settings, load_settings

__all__ = ["KEYS", "main", "value_of"]

KEYS: tuple[str, ...] = tuple(a.name for a in attrs.fields(Settings) if a.name != "redis") + tuple(
    f"redis.{a.name}" for a in attrs.fields(RedisAddress)
)
"""
Every KEY that C{get} knows: the fields of L{Settings}, with the Redis address in its parts.
"""


def value_of(settings: Settings, key: str) -> str:
    """
    One setting as C{get} prints it: C{""} for none, JSON for a mapping or a list, else
    C{str()}.

    @param key: one of L{KEYS}.
    @raise ValueError: the value holds a line break, which would shift every line after it.
    """
    value: object = settings
    for part in key.split("."):
        value = getattr(value, part)
    if value is None:
        text = ""
    elif isinstance(value, (Mapping, list, tuple)):
        text = json.dumps(dict(value) if isinstance(value, Mapping) else list(value))
    else:
        text = str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"{key} holds a line break")
    return text


def _get(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vorchd.config_cli get",
        description="Print each setting's value on a line of its own, as the daemon reads it.",
    )
    parser.add_argument(
        "--config", help="the ini file (default: $VORCHD_CONFIG, else etc/vorchd.ini)"
    )
    parser.add_argument("keys", nargs="+", metavar="KEY", help=", ".join(KEYS))
    args = parser.parse_args(argv)
    unknown = [k for k in args.keys if k not in KEYS]
    if unknown:
        parser.error(f"unknown setting {unknown[0]!r} (known: {', '.join(KEYS)})")
    try:
        settings = load_settings(args.config)
        lines = [value_of(settings, key) for key in args.keys]
    except (ConfigError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _check(argv: Sequence[str]) -> int:
    # Imported here: the plugin's options pull in Twisted, libvirt and the rest of vorchd,
    # which `get` has no use for.
    from twisted.python import usage

    from vorchd.tap import Options

    try:
        Options().parseOptions(list(argv))
    except usage.UsageError as e:
        print(f"vorchd: {e}", file=sys.stderr)
        return 1
    return 0


_USAGE = """\
usage: python -m vorchd.config_cli get [--config FILE] KEY...
       python -m vorchd.config_cli check [DAEMON OPTIONS...]
"""


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run C{get} or C{check} (see the module's docstring); return the exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "get":
        return _get(rest)
    if command == "check":
        return _check(rest)
    if command in ("-h", "--help", "help"):
        sys.stdout.write(_USAGE)
        return 0
    sys.stderr.write(_USAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
