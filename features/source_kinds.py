"""The kinds of event source, defined once (docs/sources.md).

A source's ``kind`` (``sources.<name>.kind`` in the settings) picks the adapter that reads it:

* ``synthetic``: the generator's output (``recfeat generate``), in the KuaiRand log format;
* ``kuairand``: official KuaiRand CSVs, plain or gzipped;
* ``movielens``: RecBole atomic files or GroupLens ``u.data`` / ``ratings.dat`` / ``ratings.csv``;
* ``csv`` and ``parquet``: generic files described by a column mapping.

The settings model (its ``Literal``), the adapter registry (``pipelines.sources.ADAPTERS``) and
the command line (``recfeat ingest --source``) all take their kinds from here.
"""
from __future__ import annotations

#: Kinds that name a file format: what ``recfeat ingest --source`` reads.
FILE_FORMAT_KINDS = ("kuairand", "movielens", "csv", "parquet")
#: Every kind a configured source may have.
SOURCE_KINDS = ("synthetic", *FILE_FORMAT_KINDS)
#: Kinds read through a column mapping (``sources.<name>.mapping`` is required).
GENERIC_KINDS = ("csv", "parquet")
