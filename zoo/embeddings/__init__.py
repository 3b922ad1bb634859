"""Embedding files: ``zoo embed``'s resumable writer and its inputs (text files, tables, folders),
reading rows and provenance back, and the embedding map. Search and near-duplicates are the
public :mod:`zoo.search` and :mod:`zoo.duplicates`.

Modules here are private (a leading underscore): import what you need from :mod:`zoo`.
"""
