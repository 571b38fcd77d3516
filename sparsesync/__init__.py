"""sparsesync: plan and execute exact-once exports of sparse-keyed SQL tables into consolidated Parquet."""

__version__ = "0.1.0"
