"""
The web dashboard at C{/ui/}: a page, one script and one style sheet, served as they are
(no build step). The page loads the fleet from C{/v1/fleet}, follows its changes on
C{/v1/events} (Server-Sent Events, which C{connect-src 'self'} allows), and acts through
the seed API like any other client.

Only these exact paths are served; anything else (C{/ui} too) is an unknown path and
answers the seed API's C{0}: every answer outside these files stays the seed API's.
"""

from __future__ import annotations

from importlib.resources import files

_CONTENT_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
}

# Sent with every file: the page runs only its own script and style, fetches only from the
# daemon, and may not be framed by another site.
HEADERS = {
    b"content-security-policy": (
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        b" img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-cache",
}


def _load() -> dict[bytes, tuple[bytes, bytes]]:
    here = files(__name__)
    served = {}
    for path, name in (
        (b"/ui/", "index.html"),
        (b"/ui/app.js", "app.js"),
        (b"/ui/style.css", "style.css"),
    ):
        served[path] = (_CONTENT_TYPES[name.rpartition(".")[2]], here.joinpath(name).read_bytes())
    return served


# path -> (content type, body)
FILES = _load()
