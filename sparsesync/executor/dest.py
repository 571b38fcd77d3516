"""Turn ``--dest DIR|s3://bucket/prefix`` into a :class:`~sparsesync.executor.sink.Sink`."""

from __future__ import annotations

from sparsesync.errors import DestinationError, UsageError

from .sink import LocalSink, Sink


def is_s3(dest) -> bool:
    """True when ``dest`` (a ``--dest`` string or a Sink) names an S3 destination."""
    if isinstance(dest, str):
        return dest.strip().lower().startswith("s3://")
    return type(dest).__name__ == "S3Sink"  # by name: an S3Sink exists only once boto3 was importable


def open_sink(dest, *, staging: str | None = None, upload_threads: int = 0) -> Sink:
    """A sink for ``dest``: a Sink object is returned as is, ``s3://bucket[/prefix]`` an S3 sink, else a directory.

    ``staging`` is where an S3 sink stages parts before upload (a private directory is made inside it);
    a local directory stages each part beside its final name, so the rename that publishes it is atomic.
    ``upload_threads`` (from :attr:`MemoryBudget.upload_threads`) caps an S3 sink's requests per upload, so
    its uploads hold no more than the budget reserved for them; 0 keeps the sink's default.
    """
    if not isinstance(dest, str):
        return dest
    text = dest.strip()
    if not text:
        raise UsageError("--dest is empty", hint="pass a directory or s3://bucket/prefix")
    if text.lower().startswith("s3://"):
        try:
            from .s3 import S3Sink, parse_s3_url  # lazy: boto3 is only needed for S3 destinations
        except ImportError as exc:
            raise DestinationError(f"S3 destinations are unavailable: {exc}", hint="install boto3") from exc
        bucket, prefix = parse_s3_url(text)
        threads = {"max_concurrency": upload_threads} if upload_threads else {}
        return S3Sink(bucket, prefix, staging_dir=staging, **threads)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise UsageError(f"unsupported destination scheme {scheme}://", hint="pass a directory or s3://bucket/prefix")
    return LocalSink(text)


def is_local(sink) -> bool:
    """True when the sink is a local directory (parts can be read in place)."""
    return isinstance(sink, LocalSink)
