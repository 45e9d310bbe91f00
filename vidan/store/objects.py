"""Reports in object storage (``s3://bucket/prefix``), through obstore and pyarrow.

S3 has no rename and no file lock, so the commit point is an object created with
``If-None-Match: *`` (obstore's ``mode="create"``): a second create of the same key is
refused by the server. A server that silently ignores that header would let two
commits both "win" and lose one: vidan checks on opening that a second create is
refused, and refuses to write otherwise.

Settings come from the standard variables (``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``
or ``AWS_DEFAULT_REGION``, ``AWS_ALLOW_HTTP``), overridden by ``storage_options``
(``endpoint``, ``region``, ``access_key_id``, ``secret_access_key``, ``session_token``,
``allow_http``). Credentials are never written into a report or a log.
"""

from __future__ import annotations

import os
import secrets
from typing import Optional
from urllib.parse import urlparse

from vidan.store.storage import OutputError

_KEYS = ("endpoint", "region", "access_key_id", "secret_access_key", "session_token", "allow_http")


def s3_settings(options: dict[str, str]) -> dict[str, str]:
    env = os.environ
    s = {
        "endpoint": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        "access_key_id": env.get("AWS_ACCESS_KEY_ID"),
        "secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
        "session_token": env.get("AWS_SESSION_TOKEN"),
        "allow_http": env.get("AWS_ALLOW_HTTP"),
    }
    unknown = sorted(set(options) - set(_KEYS))
    if unknown:
        raise OutputError(f"unknown storage option(s): {', '.join(unknown)} (known: {', '.join(_KEYS)})")
    s.update({k: v for k, v in options.items() if v is not None})
    if s["endpoint"] and s["endpoint"].startswith("http://") and s["allow_http"] is None:
        s["allow_http"] = "true"  # an explicit http:// endpoint is a local test server
    return {k: v for k, v in s.items() if v}


class ObjectStorage:
    def __init__(self, uri: str, options: dict[str, str]):
        u = urlparse(uri)
        if u.scheme not in ("s3", "s3a"):
            raise OutputError(f"unsupported storage {u.scheme}:// (vidan reads local paths and s3://)")
        if not u.netloc:
            raise OutputError(f"{uri}: no bucket")
        self.bucket = u.netloc
        self.prefix = u.path.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.settings = s3_settings(options)
        from obstore.store import S3Store

        st = self.settings
        kwargs = {k: st[k] for k in ("endpoint", "region", "access_key_id", "secret_access_key", "session_token")
                  if k in st}
        self._store = S3Store(self.bucket, prefix=self.prefix or None,
                              client_options={"allow_http": st.get("allow_http", "false").lower() == "true"},
                              **kwargs)
        self._fs = None

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"key {key!r} leaves the report prefix")
        return key

    def read(self, key: str) -> Optional[bytes]:
        import obstore

        try:
            return bytes(obstore.get(self._store, self._key(key)).bytes())
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self._store, self._key(key), data)

    def create(self, key: str, data: bytes) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self._store, self._key(key), data, mode="create")
            return True
        except (AlreadyExistsError, PreconditionError):
            return False

    def list(self, prefix: str) -> list[tuple[str, float]]:
        import obstore

        res = obstore.list_with_delimiter(self._store, self._key(prefix) if prefix else None)
        out = []
        for o in res["objects"]:
            name = o["path"].rsplit("/", 1)[-1]
            out.append((name, o["last_modified"].timestamp()))
        return sorted(out)

    def delete(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self._store, self._key(key))
        except FileNotFoundError:
            pass

    def arrow(self) -> tuple[object, str]:
        if self._fs is None:
            import pyarrow.fs as pafs

            st = self.settings
            kw: dict = {"region": st.get("region", "us-east-1")}
            if "endpoint" in st:
                u = urlparse(st["endpoint"])
                kw["endpoint_override"] = u.netloc or u.path
                kw["scheme"] = u.scheme or "https"
            for ours, theirs in (("access_key_id", "access_key"), ("secret_access_key", "secret_key"),
                                 ("session_token", "session_token")):
                if ours in st:
                    kw[theirs] = st[ours]
            self._fs = pafs.S3FileSystem(**kw)
        return self._fs, f"{self.bucket}/{self.prefix}".rstrip("/")

    def is_empty(self) -> bool:
        import obstore

        for batch in obstore.list(self._store, None, chunk_size=1):
            if batch:
                return False
        return True

    def check_conditional_create(self) -> None:
        """Refuse a store that accepts a second create of the same key (it would lose commits)."""
        key = f"_probe/{secrets.token_hex(8)}"
        try:
            first = self.create(key, b"1")
            second = self.create(key, b"2")
        finally:
            self.delete(key)
        if not first or second:
            raise OutputError(f"{self.uri}: the object store does not refuse a second conditional create "
                              "(If-None-Match: *); vidan cannot commit safely there")
