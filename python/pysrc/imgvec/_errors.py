"""The exceptions imgvec raises. Every one is an :class:`Error`; those about a file carry its
``path``."""

from __future__ import annotations

from typing import Optional


class Error(Exception):
    """Any error imgvec raises."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        #: The file or folder the error is about, when there is one.
        self.path = path


class CorruptionError(Error):
    """Stored data failed its checksum or does not parse; the message names the file."""


class LockedError(Error):
    """Another process holds the database open for writing."""


class ImageError(Error):
    """An image could not be read or decoded (``path`` names it)."""


class InvalidArgument(Error, ValueError):
    """A bad argument: an unknown preset or mode, an id that is not stored, a bad array shape,
    a folder that is not a database."""


__all__ = ["Error", "CorruptionError", "LockedError", "ImageError", "InvalidArgument"]
