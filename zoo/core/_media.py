"""Bytes that arrive with a declared media type (a data URL's ``image/png``), so that a modality's
decoder can hold them to it: a server client says what it sends, and a PNG must then be a PNG,
not whatever other format the bytes happen to be. Any decoder that does not look treats them as
the plain bytes they are."""

from __future__ import annotations

from typing import Any


class MediaBytes(bytes):
    """``bytes`` with the ``media_type`` they were declared as (lower case, e.g. ``"image/png"``)."""

    media_type: str

    def __new__(cls, data: bytes, media_type: str) -> MediaBytes:
        made = super().__new__(cls, data)
        made.media_type = media_type.lower()
        return made

    def __reduce__(self) -> tuple[Any, ...]:  # to decode workers, type and all
        return MediaBytes, (bytes(self), self.media_type)


def declared_format(item: Any, formats: dict[str, str], kind: str) -> str | None:
    """The format ``item`` was declared as, by ``formats`` (media type -> the decoder's name for it),
    or None for bytes that came with no media type; a declared type the decoder does not read is a
    ``ValueError`` naming it and those it reads."""
    if not isinstance(item, MediaBytes):
        return None
    found = formats.get(item.media_type)
    if found is None:
        known = ", ".join(sorted(formats))
        raise ValueError(f"{kind} of type {item.media_type} is not one zoo decodes; send one of {known}")
    return found
