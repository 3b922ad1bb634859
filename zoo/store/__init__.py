"""Files on this machine: fetching sources, ``ZOO_HOME`` and its cache, sha256 integrity, safe
weight reading, manifests and provenance, bundles for air-gapped machines, atomic writes.

Modules here are private (a leading underscore): import what you need from :mod:`zoo`.
"""
