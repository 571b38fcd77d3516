"""The executor: replays a saved plan into consolidated Parquet files on disk or S3.

It reads plans only through :mod:`sparsesync.planner.plan` (the contract) and is the only part of sparsesync that
reads rows.
"""
