"""Where the shared record lives: a local directory or an S3-compatible object store.

`CG_LAKE_URL` names one root holding `lake/` (the Parquet days) and `spool/` (the published
spool segments): by default `CG_DATA_DIR` itself, which is exactly the layout of one machine,
or `s3://bucket/prefix` for a deployment whose runs and sidecar live on different nodes. Both
the code location (the lake, the spool readers) and the sidecar (the spool publisher) open it,
and the sidecar imports nothing of `cg_assets`, so the one definition of the URL lives here.

An object store is reached through `pyarrow.fs.S3FileSystem`, configured only from the
environment the AWS tools use (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, read by the AWS SDK's own credential
chain) plus `CG_S3_ENDPOINT` for a store that is not AWS. Credentials are never taken from the
URL, so a URL is safe to show in logs, run metadata and error messages.

`ObjectPath` lets the spool's readers, written against `pathlib.Path`, read an object store
unchanged: it has the few `Path` methods they use.

pyarrow (and with it numpy) is imported only when a store is opened: a sidecar that writes to
its data directory alone stays as light as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import pyarrow.fs as pafs

S3_ENDPOINT_ENV = "CG_S3_ENDPOINT"
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
DEFAULT_REGION = "us-east-1"
# A store that does not answer must not hold a sensor tick or the sidecar's publisher for
# minutes: the callers retry on their own schedule.
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
S3_ATTEMPTS = 3
TORN_READ_ATTEMPTS = 5


def check_store_url(url: str) -> str:
    """`url` if it names a usable root, else ValueError saying what is allowed (the URL is
    never echoed: it is refused exactly when it may hold credentials)."""
    if "://" not in url:
        if not url.strip():
            raise ValueError("expected a local path or s3://bucket/prefix")
        return url
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(
            f"scheme {parts.scheme!r} is not supported: use a local path or s3://bucket/prefix"
        )
    if "@" in parts.netloc or parts.password is not None:
        raise ValueError(
            "credentials in the URL are not accepted: set AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY instead"
        )
    if not parts.netloc:
        raise ValueError("expected s3://bucket/prefix (the bucket is missing)")
    if parts.query or parts.fragment:
        raise ValueError("expected s3://bucket/prefix without ?query or #fragment")
    return url


def hide_credentials(url: str) -> str:
    """`url` as a message may show it: any user:password part replaced by ***."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def check_endpoint(value: str) -> str:
    """A `CG_S3_ENDPOINT` value: http(s)://host[:port], without credentials or a path."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http(s)://host[:port], e.g. http://127.0.0.1:9000")
    if "@" in parts.netloc:
        raise ValueError("credentials in the endpoint are not accepted: use the AWS_* variables")
    if parts.path.strip("/") or parts.query:
        raise ValueError("expected http(s)://host[:port] without a path")
    return value


@dataclass(frozen=True)
class Store:
    """An opened root: its file system, the root's path within it, and the URL to show."""

    fs: pafs.FileSystem
    root: str
    url: str

    @property
    def is_local(self) -> bool:
        return self.fs.type_name == "local"

    def path(self, name: str) -> Path | ObjectPath:
        """`name` under the root, as a `Path` for a local root (so local code stays as it is)."""
        if self.is_local:
            return Path(self.root) / name
        return ObjectPath(self.fs, f"{self.root}/{name}")

    def same_place(self, other: Store) -> bool:
        return type(self.fs) is type(other.fs) and self.root == other.root


def open_store(url: str | Path, environ: Mapping[str, str] | None = None) -> Store:
    """The root named by `url` (see the module docstring); ValueError for a bad URL."""
    import pyarrow.fs as pafs

    text = check_store_url(str(url))
    if "://" not in text:
        root = str(Path(text).expanduser().resolve())
        return Store(pafs.LocalFileSystem(), root, root)
    parts = urlsplit(text)
    root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
    return Store(s3_filesystem(os.environ if environ is None else environ), root, text)


def s3_filesystem(env: Mapping[str, str]) -> pafs.S3FileSystem:
    """An S3FileSystem from the environment; credentials stay with the AWS SDK's chain."""
    import pyarrow.fs as pafs

    options: dict[str, object] = {
        "region": next((env[n] for n in REGION_ENVS if env.get(n)), DEFAULT_REGION),
        "connect_timeout": CONNECT_TIMEOUT_S,
        "request_timeout": REQUEST_TIMEOUT_S,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
        # The upload starts on the first write, not on open, so an object under 5 MB (every
        # spool segment, state record and most days) goes in a single PUT; a bigger one as a
        # multipart upload, which the store likewise shows only once it is complete.
        "allow_delayed_open": True,
    }
    endpoint = env.get(S3_ENDPOINT_ENV, "").strip()
    if endpoint:
        parts = urlsplit(check_endpoint(endpoint))
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme
    return pafs.S3FileSystem(**options)


def read_object(fs: pafs.FileSystem, path: str) -> bytes:
    """The whole of an object that writers replace (a state record), never a torn read.

    An S3 read is a HEAD for the size and then a ranged GET, so an object replaced between
    the two comes back as the new version cut to the old length. Each upload replaces the
    object whole, so a read whose length matches the size seen afterwards is one version;
    any other read is repeated.
    """
    for _ in range(TORN_READ_ATTEMPTS):
        with fs.open_input_stream(path) as stream:
            data = stream.read()
        if fs.get_file_info(path).size == len(data):
            return data
    raise OSError(f"{path} kept changing while it was read ({TORN_READ_ATTEMPTS} attempts)")


@dataclass(frozen=True)
class ObjectStat:
    st_mtime: float
    st_size: int


@dataclass(frozen=True)
class ObjectPath:
    """An object in a `pyarrow.fs` file system, with the `Path` methods the spool uses."""

    fs: pafs.FileSystem
    path: str

    def __str__(self) -> str:
        return f"{self.fs.type_name}://{self.path}"

    def __truediv__(self, name: str) -> ObjectPath:
        return ObjectPath(self.fs, f"{self.path}/{name}")

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.fs, self.path.rpartition("/")[0])

    def with_suffix(self, suffix: str) -> ObjectPath:
        stem, dot, _ = self.name.rpartition(".")
        return self.parent / ((stem if dot else self.name) + suffix)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def write_bytes(self, data: bytes) -> None:
        """One upload: the object appears whole when it returns, or not at all."""
        with self.fs.open_output_stream(self.path) as out:
            out.write(data)

    def stat(self) -> ObjectStat:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{self} does not exist")
        return ObjectStat(info.mtime.timestamp() if info.mtime else 0.0, info.size or 0)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def iterdir(self) -> Iterator[ObjectPath]:
        """The files directly under this prefix; none if it does not exist."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                yield ObjectPath(self.fs, info.path)
