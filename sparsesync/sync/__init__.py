"""Incremental sync: keep a table's Parquet image at a destination in step with its source."""
