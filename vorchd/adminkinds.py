"""
What the values of admin commands' arguments are (L{Kind}), and the kinds the commands of
L{vorchd.admincmds} use: how vorchd-admin reads a typed word, and how the daemon checks a
received value.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen

# Client-side names for two policies, by what they do to the fleet.
ALIASES = {"spread": "worst-fit", "pack": "best-fit"}


class BadArgument(ValueError):
    """
    A command, or an argument, that cannot be taken; the message says why.
    """


# --- What argument values are ------------------------------------------------------------


@frozen
class Kind:
    """
    What the values of an argument are.

    @ivar noun: what one value is, as messages name it: C{PM id}.
    @ivar metavar: how usage lines show it: C{PMID}.
    @ivar parse: a word typed in vorchd-admin -> its value.
    @ivar check: a value the daemon received -> the value it acts on.
    @ivar completes: which of the prompt's known words complete it (C{"pmids"},
        C{"policies"}), if any.

    C{parse} and C{check} raise L{BadArgument} with what is wrong with the value
    (C{"'x' is not a number"}); the caller adds which argument it was.
    """

    noun: str
    metavar: str
    parse: Callable[[str], Any]
    check: Callable[[Any], Any]
    completes: str | None = None


def whole_number(word: str) -> int:
    """
    A typed whole number. @raise BadArgument: anything else.
    """
    try:
        return int(word)
    except ValueError:
        raise BadArgument(f"{word!r} is not a number") from None


def is_whole_number(value: object) -> int:
    """
    A received whole number (not a bool). @raise BadArgument: anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadArgument(f"{value!r} is not a number")
    return value


def is_text(value: object) -> str:
    """
    Received text. @raise BadArgument: anything else.
    """
    if not isinstance(value, str):
        raise BadArgument(f"{value!r} is not a name")
    return value


def number(word: str) -> float:
    """
    A typed number. @raise BadArgument: anything else.
    """
    try:
        return float(word)
    except ValueError:
        raise BadArgument(f"{word!r} is not a number") from None


def is_ratio(value: object) -> float:
    """
    A received overcommit ratio: a number (or its text) above 0 and below a million.
    @raise BadArgument: anything else.
    """
    try:
        ratio = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadArgument(f"{value!r} is not a number") from None
    if not 0 < ratio < 1e6:
        raise BadArgument(f"must be positive, not {value!r}")
    return ratio


PMID = Kind("PM id", "PMID", whole_number, is_whole_number, completes="pmids")
# The daemon checks the name itself against the policies it has.
POLICY = Kind("policy", "NAME", lambda word: ALIASES.get(word, word), is_text, "policies")
RATIO = Kind("ratio", "RATIO", number, is_ratio)


def is_flag(value: object) -> bool:
    """
    A received flag: C{True} or C{False}. @raise BadArgument: anything else.
    """
    if not isinstance(value, bool):
        raise BadArgument(f"{value!r} is not true or false")
    return value


# A flag (--evacuate): given or not; it is never typed as a word.
FLAG = Kind("flag", "", bool, is_flag)


def are_words(value: object) -> list[str]:
    """
    Received words: a list of text. @raise BadArgument: anything else.
    """
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise BadArgument(f"{value!r} is not a list of words")
    return value


# The rest of the line, word by word, for a command vorchd-admin runs itself (whatif).
WORDS = Kind("words", "ARG", str, are_words, completes="policies")
