"""What an OpenAI-style ``POST /v1/embeddings`` body asks for, checked item by item.

Texts are strings; images and audio come as data URLs (``data:image/jpeg;base64,...``,
``data:audio/wav;base64,...``), as OpenAI's own multimodal endpoints take them. Every refusal is
a :class:`RequestError` naming the field or the input index, answered as a 4xx JSON body.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

# What each modality's model takes, by the kind of an input item.
ACCEPTS = {"text": ("text",), "vision": ("image",), "audio": ("audio",), "image-text": ("text", "image")}


class RequestError(Exception):
    """A request zoo refuses: HTTP ``status``, a message, and the field (``param``) it names."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        """OpenAI's error shape, which its clients read."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class EmbeddingRequest:
    model: str
    items: list[tuple[str, Any]]  # (kind, payload): ("text", str) or ("image" | "audio", bytes)
    encoding_format: str
    dimensions: int | None


def parse_request(body: bytes) -> EmbeddingRequest:
    """The request's fields, or a 400 naming the one that is wrong."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the body must be a JSON object with 'model' and 'input'")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "'model' is required: the name of a served model (GET /v1/models)", "model")
    raw = data.get("input")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "'input' must be a non-empty string or list of strings", "input")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise RequestError(400, f"encoding_format must be 'float' or 'base64', not {encoding!r}", "encoding_format")
    dimensions = data.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise RequestError(400, f"dimensions must be a positive integer, not {dimensions!r}", "dimensions")
    return EmbeddingRequest(model, [_item(i, x) for i, x in enumerate(raw)], encoding, dimensions)


def _item(index: int, value: Any) -> tuple[str, Any]:
    if not isinstance(value, str):
        what = "token ids" if isinstance(value, (int, list)) else type(value).__name__
        raise RequestError(400, f"input[{index}] is {what}; send text, or an image or audio as a data URL",
                           f"input[{index}]")
    if not value.startswith("data:"):
        return "text", value
    header, comma, payload = value.partition(",")
    mime = header[len("data:"):].split(";")[0].lower()
    kind = mime.split("/")[0]
    if not comma or not header.endswith(";base64") or kind not in ("image", "audio"):
        raise RequestError(400, f"input[{index}] is a data URL zoo cannot read ({header[:60]!r}); send "
                           "data:image/...;base64,... or data:audio/...;base64,...", f"input[{index}]")
    try:
        return kind, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"input[{index}]: the base64 payload of its data URL does not decode",
                           f"input[{index}]") from None


def check_modality(request: EmbeddingRequest, name: str, modality: str) -> None:
    """Every item is of a kind the model ``name`` takes, or a 400 naming the first that is not."""
    accepted = ACCEPTS.get(modality, ("text", "image", "audio"))
    for index, (kind, _) in enumerate(request.items):
        if kind not in accepted:
            raise RequestError(400, f"input[{index}] is {'an' if kind[0] in 'aeiou' else 'a'} {kind}; {name} "
                               f"embeds {modality} inputs ({' or '.join(accepted)})", f"input[{index}]")
