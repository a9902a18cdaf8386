"""I/O layer: settings, Spark session, warehouse, sources, generator and the batch jobs."""
