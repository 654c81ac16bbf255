"""The Parquet archive: confirmed chain records and closed CEX minutes in minute buckets (docs/archive.md).

Postgres is the hot store; the archive is the cheap, immutable, shareable one. ``archive.layout`` names
the files and keeps the manifest, ``archive.schema`` derives each kind's Parquet schema from the record
registry, ``archive.source`` reads complete buckets from Postgres, ``archive.writer`` writes them,
``archive.archiver`` runs the loop, ``archive.reader`` and ``archive.query`` read them back, and
``archive.retention`` trims Postgres to what the archive holds.
"""
