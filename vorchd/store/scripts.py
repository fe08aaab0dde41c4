"""
The Lua scripts in C{lua/}, loaded once and run by their SHA1 with C{EVALSHA}.

Each script's header says what its KEYS and ARGV are and what it returns. A script that
changes state is run with C{lua/_emit.lua} in front of it, which gives it C{emit()}: the
change and its entry in the change stream are written by the same script; and with
C{lua/_vmid.lua}, which gives it C{new_vmid()}.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from vorchd.store.keys import STREAM_MAXLEN

_READ_ONLY = frozenset({"snapshot", "active"})


class Script:
    """
    One script: its name, full text and SHA1.
    """

    def __init__(self, name: str, text: str):
        self.name = name
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


def _read(name: str) -> str:
    return resources.files("vorchd.store").joinpath("lua", f"{name}.lua").read_text("utf-8")


def load_all() -> dict[str, Script]:
    """
    Every script in C{lua/} (but the prelude), by name.
    """
    prelude = f"local STREAM_MAXLEN = {STREAM_MAXLEN}\n" + _read("_emit") + _read("_vmid")
    out = {}
    for entry in resources.files("vorchd.store").joinpath("lua").iterdir():
        name = entry.name.removesuffix(".lua")
        if not entry.name.endswith(".lua") or name.startswith("_"):
            continue
        body = _read(name)
        out[name] = Script(name, body if name in _READ_ONLY else prelude + body)
    return out


SCRIPTS = load_all()
