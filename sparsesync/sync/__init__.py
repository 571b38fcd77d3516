"""Incremental sync: keep tables' Parquet images in step with the source, many tables at once, and load each run exactly once."""
