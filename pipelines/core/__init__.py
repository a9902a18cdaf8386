"""The core families: ingestion (``events``, ``rejected_events``, ``ingest_runs``), the dimension
tables (``users``, ``items``) and the synthetic source with its ground truth.

They have the same :class:`pipelines.family.Family` shape as the feature families; their
settings are the core sections (``sources``, ``rules``, ``ingest``, ``synthetic``), and their
jobs live in ``pipelines.ingest`` and ``pipelines.synthetic``.
"""
