"""
Where an image's bytes are on this machine: its source line parsed once, then the file
itself for a local source, or a copy fetched once over ssh into the image cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vorchd.images.cache import ImageCache, ImageUnavailable
from vorchd.inventory import InputFileError, parse_image_text
from vorchd.model import ImageEntry


class Sources:
    """
    Resolves image source lines to local files.

    @param is_local: whether a host name is this machine (its files are read in place).
    @param cache: the ssh fetch cache, or C{None} for a daemon that fetches nothing.
    """

    def __init__(self, is_local: Callable[[str], bool], cache: ImageCache | None):
        self.is_local = is_local
        self.cache = cache
        self._parsed: dict[str, ImageEntry] = {}

    def remember(self, entries: Iterable[ImageEntry]) -> None:
        """
        Keep the entries the image_file was parsed into at load, so that no line of it
        is parsed again.
        """
        for entry in entries:
            self._parsed[entry.line] = entry

    def entry(self, line: str) -> ImageEntry:
        """
        Source line C{line} parsed (once).

        @raise ImageUnavailable: the line does not parse.
        """
        entry = self._parsed.get(line)
        if entry is None:
            try:
                [entry] = parse_image_text(line)
            except (InputFileError, ValueError) as e:
                raise ImageUnavailable(f"image source {line!r} unusable: {e}") from None
            self._parsed[line] = entry
        return entry

    async def local_path(self, line: str) -> str:
        """
        A local file with the image of source line C{line}.

        @raise ImageUnavailable: it cannot be had (unparsable, remote with no cache, the
            fetch failed).
        """
        entry = self.entry(line)
        if not entry.is_remote or self.is_local(entry.host):
            return entry.path
        if self.cache is None:
            raise ImageUnavailable(
                f"image source {line!r} is remote and this daemon has no image cache"
            )
        return await self.cache.local_path(entry)
