"""What models exist and how a name becomes a loaded model: model specs, ``registry.yaml``, the
pluggy plugin manager, zoo's own default hooks, the loader and the catalogue's published scores.

Modules here are private (a leading underscore): import what you need from :mod:`zoo`.
"""
