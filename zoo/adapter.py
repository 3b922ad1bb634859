"""The backend contract's earlier name: ``Adapter`` is :class:`zoo.core._encoder.Encoder`, kept so that
plugins written against ``zoo.adapter`` / ``zoo.Adapter`` still load."""

from __future__ import annotations

from zoo.core._encoder import Built, Encoder, resolve_device, resolve_dtype

Adapter = Encoder

__all__ = ["Adapter", "Built", "Encoder", "resolve_device", "resolve_dtype"]
