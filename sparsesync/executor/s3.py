"""The S3 destination: parts are staged locally, then uploaded; an object is visible only once complete.

S3 gives the atomicity the local sink gets from ``os.replace``: a PutObject or a completed multipart
upload appears all at once, never half-written. What can be left behind is an *incomplete multipart
upload* (invisible, but billed); s3transfer aborts it when an upload fails, and :meth:`S3Sink.commit`
double-checks and aborts any leftover for the key itself.

Everything about endpoints, credentials and retries comes from boto3/botocore: the standard AWS
settings (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, env credentials, ...) and botocore's retry modes.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from sparsesync.executor.lock import pid_alive
from sparsesync.executor.sink import STAGING_MARK, Committed
from sparsesync.errors import DestinationError, TransientDestinationError, UsageError

MiB = 1024 * 1024
STAGING_PREFIX = "sparsesync-staging-"  # + pid + "-" + mkdtemp's random suffix
DEFAULT_MAX_ATTEMPTS = 8  # per request, with botocore's exponential backoff (capped at 20 s)

# Bucket names: 3-63 chars of lowercase letters, digits, dots and hyphens, starting/ending alnum.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")

# Error codes a retry may cure; botocore already retried them max_attempts times before we see them.
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    "502",
    "504",
}
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "403"}
_NO_BUCKET_CODES = {"NoSuchBucket"}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


def _listed(glob, pattern: str) -> list[Path]:
    """``glob(pattern)`` as a list; a base directory that vanished (or never was) lists nothing."""
    try:
        return list(glob(pattern))
    except FileNotFoundError:
        return []


def _staged_files(base: Path):
    """Staged files under ``base``, walked with ``os.walk``: a directory another process removes while we
    walk is skipped (``os.walk`` ignores the error), where ``Path.rglob`` would raise FileNotFoundError."""
    for folder, _dirs, files in os.walk(base):
        for name in files:
            if name.endswith(STAGING_MARK):
                yield Path(folder) / name


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``(bucket, "some/prefix")``; raise UsageError if malformed.

    The prefix loses leading/trailing slashes; it may be empty. ``..`` or empty path segments are
    refused because they would put objects somewhere the user did not name.
    """
    parts = urlsplit(url)
    # Echo the URL in errors only without any user:password@ part someone may have pasted in.
    shown = url.replace(parts.netloc, parts.netloc.rsplit("@", 1)[-1], 1) if "@" in parts.netloc else url
    if parts.scheme != "s3":
        raise UsageError(f"not an S3 URL: {shown!r}", hint="write it as s3://bucket/prefix")
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise UsageError(
            f"S3 URL {shown!r} must not hold credentials, a port, a query or a fragment",
            hint="write it as s3://bucket/prefix; set the endpoint with AWS_ENDPOINT_URL",
        )
    bucket = parts.netloc
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise UsageError(
            f"invalid S3 bucket name {bucket!r} in {shown!r}",
            hint="bucket names are 3-63 lowercase letters, digits, dots or hyphens",
        )
    prefix = parts.path.strip("/")
    if prefix:
        segments = prefix.split("/")
        if any(s in ("", ".", "..") for s in segments):
            raise UsageError(f"S3 prefix {prefix!r} has an empty, '.' or '..' segment", hint="use s3://bucket/a/b")
    return bucket, prefix


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    if not code:
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(status or "")
    return code


def _root_client_error(exc: BaseException) -> BaseException:
    """boto3 wraps upload ClientErrors in S3UploadFailedError; dig the ClientError out of the chain."""
    seen = exc
    while seen is not None:
        if getattr(seen, "response", None):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def boto_errors() -> tuple[type[BaseException], ...]:
    """What boto3/botocore raise for a failed S3 call: HTTP-level ``ClientError`` and everything short of an
    answer (``BotoCoreError``: unreachable endpoint, no credentials, timeouts; ``Boto3Error``: transfers).
    The sink and the S3 lock catch exactly these and turn them into one line with :func:`s3_error`."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, Boto3Error)


def s3_error(exc: BaseException, action: str, bucket: str, key: str | None = None,
             endpoint: str | None = None) -> DestinationError:
    """One line for a failed S3 call on ``s3://bucket/key``: what, where and how to fix it (never credentials).

    ``TransientDestinationError`` when a later run may succeed (throttling, 5xx, a dropped connection),
    else ``DestinationError`` (exit 8): missing bucket, access denied, rejected or absent credentials, an
    unreachable endpoint. The message names the s3:// URL, so no ``file`` context is added.
    """
    from botocore import exceptions as bx

    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    root = _root_client_error(exc)
    code = _error_code(root)
    if isinstance(root, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        return DestinationError(
            f"cannot {action} {where}: no AWS credentials found",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
        )
    if isinstance(root, bx.EndpointConnectionError):
        return DestinationError(
            f"cannot {action} {where}: S3 endpoint {endpoint or getattr(root, 'kwargs', {}).get('endpoint_url', '?')}"
            " is unreachable",
            hint="check AWS_ENDPOINT_URL / network access to S3",
        )
    if isinstance(root, (bx.ConnectionClosedError, bx.ReadTimeoutError, bx.ConnectTimeoutError,
                         bx.ResponseStreamingError, bx.HTTPClientError)):
        return TransientDestinationError(
            f"cannot {action} {where}: connection failed after retries ({type(root).__name__})",
            hint="S3 or the network is unstable; run again to resume",
        )
    if code in _NO_BUCKET_CODES:
        return DestinationError(
            f"S3 bucket {bucket!r} does not exist",
            hint="create it or fix the s3:// destination URL",
        )
    if code in _DENIED_CODES:
        return DestinationError(
            f"access denied: cannot {action} {where}",
            hint=f"grant s3:PutObject/GetObject/ListBucket/AbortMultipartUpload on {bucket}",
        )
    if code in _CREDENTIAL_CODES:
        return DestinationError(
            f"cannot {action} {where}: AWS credentials rejected ({code})",
            hint="check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
        )
    if code in _TRANSIENT_CODES or code.startswith("5"):
        return TransientDestinationError(
            f"cannot {action} {where}: S3 kept failing ({code}) after retries",
            hint="S3 is throttling or failing; run again to resume",
        )
    if code:
        return DestinationError(f"cannot {action} {where}: S3 error {code}")
    if isinstance(root, bx.BotoCoreError):  # any other failure short of an answer (bad region, endpoint, config)
        return DestinationError(f"cannot {action} {where}: {type(root).__name__}",
                                hint="check the AWS settings (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, credentials)")
    # Not a boto error we know: keep only the exception type (its text may hold anything).
    return DestinationError(f"cannot {action} {where}: {type(exc).__name__}")


class S3Sink:
    """An ``s3://bucket/prefix`` destination implementing the executor's ``Sink`` protocol.

    ``client`` defaults to ``boto3.client("s3")`` from the standard AWS settings with a botocore retry
    config (``retry_mode`` "standard" or "adaptive", ``max_attempts`` tries per request). Left as None,
    those two come from the standard AWS settings (``AWS_RETRY_MODE``/``AWS_MAX_ATTEMPTS`` or the
    profile's ``retry_mode``/``max_attempts``), else standard mode with 8 attempts.
    ``transfer_config`` defaults to multipart above ``multipart_threshold`` with ``multipart_chunksize``
    parts and ``max_concurrency`` threads per upload. :meth:`commit_async` runs up to
    ``upload_workers`` uploads in the background so reading can go on meanwhile.

    Memory: uploads stream the staged file from disk, so what they hold grows with the requests in flight
    (``max_concurrency`` per upload), not with the chunk size; :meth:`memory_bytes` is that bound, and the
    executor reserves it in its :class:`~sparsesync.executor.budget.MemoryBudget` (which also picks
    ``max_concurrency``) before sizing batches.
    """

    #: keys per ListObjectsV2 page (S3's maximum is 1000); smaller only to exercise paging in tests
    list_page_size: int = 1000

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client=None,
        transfer_config=None,
        max_attempts: int | None = None,
        retry_mode: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
        max_concurrency: int | None = None,
        upload_workers: int = 2,
        staging_dir: str | os.PathLike | None = None,
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        from .budget import S3_MAX_THREADS  # pyarrow comes with it: not at import time of this module

        if max_concurrency is None:
            max_concurrency = S3_MAX_THREADS
        if not _BUCKET_RE.match(bucket or ""):
            raise UsageError(f"invalid S3 bucket name {bucket!r}", hint="3-63 lowercase letters, digits, dots or hyphens")
        if max_attempts is not None and max_attempts < 1:
            raise UsageError(f"S3 max_attempts must be at least 1, got {max_attempts}")
        if retry_mode is not None and retry_mode not in ("standard", "adaptive", "legacy"):
            raise UsageError(f"unknown S3 retry mode {retry_mode!r}", hint="use standard or adaptive")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if client is None:
            client = self._make_client(max_attempts, retry_mode, connect_timeout, read_timeout, max_concurrency)
        self.client = client
        self.transfer_config = transfer_config or TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            use_threads=True,
        )
        base = Path(staging_dir) if staging_dir is not None else Path(tempfile.gettempdir())
        self._staging_base = base
        self._staging_root: Path | None = None  # made on first use by mkdtemp: private (0700), never adopted
        self._removed_root: Path | None = None  # the one close() removed (what staging_root names after it)
        self._staging_lock = threading.Lock()
        self._upload_workers = max(1, upload_workers)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def memory_bytes(self, uploads: int = 1) -> int:
        """Bytes this sink holds at most with ``uploads`` uploads at once (the executor's workers each commit
        their own part; :meth:`commit_async` runs ``upload_workers``): client plus requests in flight."""
        from .budget import s3_reserved_bytes

        return s3_reserved_bytes(uploads, self.transfer_config.max_request_concurrency)

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "S3Sink":
        """Build a sink from ``s3://bucket/prefix`` (see :func:`parse_s3_url`); kwargs go to the constructor."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, **kwargs)

    @staticmethod
    def _make_client(max_attempts, retry_mode, connect_timeout, read_timeout, max_concurrency):
        import boto3
        from botocore.config import Config

        # A fresh session: boto3's default session is shared module state and not thread-safe to create.
        session = boto3.session.Session()
        # An explicit Config beats the environment in botocore, so only fill in what the user's AWS
        # settings leave open; a user's AWS_MAX_ATTEMPTS / AWS_RETRY_MODE still wins over our default.
        core = session._session  # botocore session: resolves env vars and the profile
        if max_attempts is None:
            max_attempts = int(core.get_config_variable("max_attempts") or DEFAULT_MAX_ATTEMPTS)
        if retry_mode is None:
            retry_mode = core.get_config_variable("retry_mode") or "standard"
            if retry_mode == "legacy":  # botocore's own default when nothing is configured
                retry_mode = "standard"
        config = Config(
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},  # incl. the first try
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # each upload runs max_concurrency part threads, plus the background upload workers
            max_pool_connections=max(10, 4 * max_concurrency),
        )
        return session.client("s3", config=config)

    # ------------------------------------------------------------------ naming
    def key(self, relpath: str) -> str:
        """The object key for a relative path (``prefix/relpath``); refuses paths that escape the prefix."""
        rel = relpath.strip("/")
        if not rel or any(s in ("", ".", "..") for s in rel.split("/")):
            raise DestinationError(f"path {relpath!r} is not a valid object name under {self.describe()}")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _dir_key(self, prefix: str) -> str:
        """Key prefix for listing a 'directory' (trailing slash so 't/p' does not match 't/p2/...')."""
        rel = prefix.strip("/")
        if not rel:
            return f"{self.prefix}/" if self.prefix else ""
        return self.key(rel) + "/"

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def url(self, relpath: str) -> str:
        """``s3://bucket/prefix/relpath`` as Redshift's manifest wants it."""
        return f"s3://{self.bucket}/{self.key(relpath)}"

    def describe(self) -> str:
        """Human-readable destination, with the endpoint when it is not AWS's own."""
        base = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", "") or ""
        if endpoint and "amazonaws.com" not in endpoint:
            return f"{base} (endpoint {endpoint})"
        return base

    # ------------------------------------------------------------------ errors
    def _error(self, exc: BaseException, action: str, key: str | None) -> DestinationError:
        """Turn a boto error into one line naming bucket/key and how to fix it (see :func:`s3_error`)."""
        return s3_error(exc, action, self.bucket, key, getattr(getattr(self.client, "meta", None), "endpoint_url", None))

    def _client_errors(self):
        return boto_errors()

    # ------------------------------------------------------------------ staging + commit
    @property
    def staging_root(self) -> Path:
        """This sink's private staging directory: ``mkdtemp`` (mode 0700) under ``$TMPDIR`` or ``staging_dir``.

        A fresh name every time, created atomically, so a directory someone else made beforehand (at a
        predictable path, or with loose modes) is never used; it goes away on :meth:`close`.
        """
        if self._staging_root is None and self._removed_root is not None:
            return self._removed_root
        return self._staging_dir()

    def _staging_dir(self) -> Path:
        with self._staging_lock:
            if self._staging_root is None:
                try:
                    self._staging_root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-",
                                                               dir=self._staging_base))
                except OSError as exc:
                    raise DestinationError(
                        f"cannot create a staging directory in {self._staging_base}: {exc.strerror}",
                        hint="pass --staging DIR (a writable local directory with room for one part)",
                    ) from exc
            return self._staging_root

    def staging_path(self, relpath: str) -> Path:
        """A new, empty local file (mode 0600, in the private staging dir) for the writer to fill."""
        rel = self.key(relpath)  # validates; the key keeps staging names unique per destination
        path = self._staging_dir() / self.bucket / f"{rel}.{uuid.uuid4().hex[:8]}{STAGING_MARK}"
        try:
            root = self._staging_dir()
            for d in reversed([p for p in path.parents if root in p.parents]):  # each level 0700
                d.mkdir(mode=0o700, exist_ok=True)
            # Created here with 0600 and O_EXCL: writers truncate and fill it, the mode stays.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except OSError as exc:
            raise DestinationError(f"cannot create staging file in {path.parent}: {exc.strerror}", file=relpath) from exc
        return path

    def discard(self, staging: Path) -> None:
        """Drop a staged file that will not be committed."""
        Path(staging).unlink(missing_ok=True)

    def commit(self, staging: Path, relpath: str) -> Committed:
        """Upload the staged file as ``relpath`` (multipart when large); consumes the staging file.

        The object becomes visible only when the upload completes. On failure no incomplete multipart
        upload is left for the key, the staging file is kept (the caller may retry or discard) and a
        ``DestinationError`` (``TransientDestinationError`` if a later retry may help) is raised.
        """
        key = self.key(relpath)
        staging = Path(staging)
        try:
            local_size = staging.stat().st_size
        except OSError as exc:
            raise DestinationError(f"staged file {staging} is missing: {exc.strerror}", file=key) from exc
        try:
            self.client.upload_file(str(staging), self.bucket, key, Config=self.transfer_config)
        except self._client_errors() as exc:
            self._abort_uploads_for(key)
            raise self._error(exc, "upload", key) from None
        size = self._head_size(key, "verify")
        if size != local_size:
            # Should never happen; refuse to report a part whose bytes are not what we wrote.
            raise DestinationError(
                f"uploaded object has {size} bytes, staged file has {local_size}", file=self.url(relpath)
            )
        staging.unlink(missing_ok=True)
        return Committed(url=self.url(relpath), size=size)

    def commit_async(self, staging: Path, relpath: str) -> concurrent.futures.Future:
        """Start :meth:`commit` in a background thread; returns a ``Future[Committed]``.

        Lets the orchestrator upload part N while it reads part N+1. At most ``upload_workers`` uploads
        run at once; further submissions queue. Call :meth:`close` (or use the sink as a context
        manager) to wait for them.
        """
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._upload_workers, thread_name_prefix="s3-upload"
                )
            return self._pool.submit(self.commit, staging, relpath)

    def close(self) -> None:
        """Wait for background uploads and release their threads; remove this sink's staging dir and all in it.

        Whatever is still staged then belongs to a part that was never committed: nothing is orphaned.
        """
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        with self._staging_lock:
            root, self._staging_root = self._staging_root, None
        if root is not None:
            self._removed_root = root
            shutil.rmtree(root, ignore_errors=True)

    def __enter__(self) -> "S3Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ objects
    def _head_size(self, key: str, action: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except self._client_errors() as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                return None
            raise self._error(exc, action, key) from None
        return int(head["ContentLength"])

    def exists(self, relpath: str) -> bool:
        """Whether the object is visible."""
        return self._head_size(self.key(relpath), "check") is not None

    def size(self, relpath: str) -> int | None:
        """The object's size in bytes, or None if it does not exist."""
        return self._head_size(self.key(relpath), "check")

    def list(self, prefix: str) -> list[str]:
        """Relative paths of the visible objects under ``prefix`` (a 'directory'), sorted."""
        key_prefix = self._dir_key(prefix)
        out: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=key_prefix, PaginationConfig={"PageSize": self.list_page_size}
            )
            for page in pages:
                out.extend(self._rel(obj["Key"]) for obj in page.get("Contents", []))
        except self._client_errors() as exc:
            raise self._error(exc, "list", key_prefix) from None
        return sorted(out)

    def delete(self, relpath: str) -> None:
        """Delete an object (no error if it does not exist)."""
        key = self.key(relpath)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except self._client_errors() as exc:
            raise self._error(exc, "delete", key) from None

    def put_bytes(self, relpath: str, data: bytes) -> Committed:
        """Write a small object with one PutObject (atomic on S3)."""
        key = self.key(relpath)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except self._client_errors() as exc:
            raise self._error(exc, "write", key) from None
        return Committed(url=self.url(relpath), size=len(data))

    def get_bytes(self, relpath: str) -> bytes | None:
        """An object's content, or None if it does not exist."""
        key = self.key(relpath)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            return resp["Body"].read()
        except self._client_errors() as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                return None
            raise self._error(exc, "read", key) from None

    # ------------------------------------------------------------------ leftovers
    def incomplete_uploads(self, prefix: str = "") -> list[tuple[str, str]]:
        """``(key, upload_id)`` of the multipart uploads in progress under ``prefix``."""
        key_prefix = self._dir_key(prefix)
        found: list[tuple[str, str]] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=key_prefix)
            for page in pages:
                found.extend((u["Key"], u["UploadId"]) for u in page.get("Uploads", []))
        except self._client_errors() as exc:
            raise self._error(exc, "list multipart uploads under", key_prefix) from None
        return found

    def _abort_uploads_for(self, key: str) -> None:
        """Best effort after a failed upload: abort any incomplete multipart upload of exactly ``key``.

        s3transfer already aborts on failure; this catches the case where its abort itself failed.
        If S3 is unreachable this cannot succeed either; ``cleanup_staging`` retries at the next run.
        """
        try:
            resp = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for u in resp.get("Uploads", []):
                if u["Key"] == key:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=u["UploadId"])
        except self._client_errors():
            pass

    def cleanup_staging(self, prefix: str, *, min_age_s: float = 0.0, only=None) -> int:
        """Remove leftovers of crashed runs under ``prefix``; returns how many were removed.

        Two kinds: local staging files (of this process and of processes that no longer run) and
        incomplete multipart uploads in the bucket (aborted). Call it before a run starts, while no
        other run writes the same prefix; ``min_age_s`` spares uploads initiated more recently; ``only``
        (a predicate on the relative path) limits the uploads aborted, so a shard leaves the uploads of
        other shards running beside it alone (local staging is per process: another live one is spared).
        """
        n = 0
        key_prefix = self._dir_key(prefix)
        bucket_dir_name = self.bucket
        # Another run on this host (a shard started beside us) may sweep the same dead process's directory
        # at the same time: whatever it removed first is simply gone, never an error (finding 17.4a).
        for root in _listed(self._staging_base.glob, f"{STAGING_PREFIX}*"):
            m = re.match(rf"^{STAGING_PREFIX}(\d+)(-|$)", root.name)
            if m is None:
                continue
            pid = int(m.group(1))
            try:
                st = root.lstat()
            except FileNotFoundError:
                continue  # swept by another run meanwhile
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue  # a link, not a directory, or another user's: never touched
            if pid != os.getpid() and pid_alive(pid):
                continue  # another live process: its staging files are in use
            base = root / bucket_dir_name / key_prefix if key_prefix else root / bucket_dir_name
            for p in _staged_files(base):
                try:
                    p.unlink()
                    n += 1
                except FileNotFoundError:
                    pass  # another sweep removed it first (and counts it)
            if pid != os.getpid() and not any(_staged_files(root)):
                # a dead process's staging dir with nothing staged left in it
                shutil.rmtree(root, ignore_errors=True)
        cutoff = time.time() - min_age_s
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=key_prefix)
            for page in pages:
                for u in page.get("Uploads", []):
                    initiated = u.get("Initiated")
                    if min_age_s and initiated is not None and initiated.timestamp() > cutoff:
                        continue
                    if only is not None and not only(self._rel(u["Key"])):
                        continue
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])
                    n += 1
        except self._client_errors() as exc:
            raise self._error(exc, "abort incomplete uploads under", key_prefix) from None
        return n
