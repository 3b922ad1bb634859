"""What an OpenAI-style ``POST /v1/embeddings`` body asks for, checked item by item.

Texts are strings; images and audio come as data URLs (``data:image/jpeg;base64,...``,
``data:audio/wav;base64,...``), as OpenAI's own multimodal endpoints take them. Every refusal is
a :class:`RequestError` naming the field or the input index, answered as a 4xx JSON body. A data
URL goes to the modality that registered its MIME type (``media_types``), so a modality a plugin
adds is served with no change here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from zoo.core._media import MediaBytes
from zoo.errors import did_you_mean

# A data URL's header; one whose MIME type no modality registered is refused, not read as text.
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)

# The fields of OpenAI's embeddings request ("user" is accepted and unused, as OpenAI documents it).
FIELDS = ("model", "input", "encoding_format", "dimensions", "user")


class RequestError(Exception):
    """A request zoo refuses: HTTP ``status``, a message, and the field (``param``) it names."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """OpenAI's error shape, which its clients read."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class EmbeddingRequest:
    model: str
    items: list[tuple[str, Any]]  # (modality, payload): ("text", str) or ("vision", bytes)...
    encoding_format: str
    dimensions: int | None
    media: list[str]  # each item's type as sent: "text" or a data URL's MIME type ("image/png")


def parse_request(body: bytes, max_inputs: int = 2048,
                  modality_of_media: Callable[[str], str | None] = lambda media: None,
                  max_text_chars: int = 100_000) -> EmbeddingRequest:
    """The request's fields, or a 400 naming the one that is wrong. More than ``max_inputs``
    items, or a text longer than ``max_text_chars``, is refused (OpenAI's own limit is 2048
    inputs), so one request cannot hold a model for minutes. ``modality_of_media`` names the
    modality of a data URL's MIME type (the registry's)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "the body's JSON is nested too deeply; send 'input' as a flat list") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the body must be a JSON object with 'model' and 'input'")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field {unknown[0]!r}{did_you_mean(unknown[0], FIELDS)}; the request "
                           f"takes {', '.join(FIELDS)}", unknown[0])
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "'model' is required: the name of a served model (GET /v1/models)", "model")
    raw = data.get("input")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "'input' must be a non-empty string or list of strings", "input")
    if len(raw) > max_inputs:
        raise RequestError(400, f"'input' has {len(raw)} items; this server takes at most {max_inputs} per request "
                           "(zoo serve --max-inputs): send them in several requests", "input")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise RequestError(400, f"encoding_format must be 'float' or 'base64', not {encoding!r}", "encoding_format")
    dimensions = data.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise RequestError(400, f"dimensions must be a positive integer, not {dimensions!r}", "dimensions")
    items = [_item(i, x, modality_of_media, max_text_chars) for i, x in enumerate(raw)]
    return EmbeddingRequest(model, [(kind, payload) for kind, payload, _ in items], encoding, dimensions,
                            [media for _, _, media in items])


def _item(index: int, value: Any, modality_of_media: Callable[[str], str | None],
          max_text_chars: int) -> tuple[str, Any, str]:
    if not isinstance(value, str):
        raise RequestError(400, f"input[{index}] is {_json_kind(value)}; send text, or an image or audio as a data "
                           "URL", f"input[{index}]")
    url = _DATA_URL.match(value)
    if url is None:  # text, even text that starts with "data:"
        if len(value) > max_text_chars:  # tokenising it would hold the model; truncation keeps far less
            raise RequestError(400, f"input[{index}] is a text of {len(value)} characters; this server takes at most "
                               f"{max_text_chars} (zoo serve --max-text-chars): cut it, or send it as several "
                               "inputs", f"input[{index}]", "too_long")
        return "text", value, "text"
    kind = modality_of_media(url.group(1))
    if kind is None:  # not read as text either: its base64 would be embedded as words
        raise RequestError(400, f"input[{index}] is a data URL of type {url.group(1)}, which no modality of this "
                           "server takes; send an image or audio data URL, or a text as itself", f"input[{index}]")
    try:
        # the declared type travels with the bytes: the modality's decoder holds them to it
        media = url.group(1).lower()
        return kind, MediaBytes(base64.b64decode(value[url.end():], validate=True), media), media
    except (binascii.Error, ValueError):
        raise RequestError(400, f"input[{index}]: the base64 payload of its data URL does not decode",
                           f"input[{index}]") from None


def _json_kind(value: Any) -> str:
    """What a JSON value that is not a string is, in the client's words (not Python's ``NoneType``)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, list)):  # OpenAI's endpoint takes token ids; zoo's models tokenise themselves
        return "token ids"
    return {float: "a number", dict: "an object"}.get(type(value), "null")


def check_modality(request: EmbeddingRequest, name: str, towers: Collection[str]) -> None:
    """Every item is of a modality one of the model's ``towers`` takes, or a 400 naming the first
    that is not."""
    for index, (kind, _) in enumerate(request.items):
        if kind not in towers:
            what = request.media[index].split("/")[0]
            raise RequestError(400, f"input[{index}] is {'an' if what[0] in 'aeiou' else 'a'} {what}; {name} "
                               f"embeds {' or '.join(towers)} inputs", f"input[{index}]")
