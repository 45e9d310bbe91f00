"""Naming a Ray cluster, checking it can be reached, and what a submitted job carries.

No Ray here (``workers/`` talks to Ray): only the conventions. ``vidan analyze`` joins the
cluster named by ``--address`` or, failing that, ``RAY_ADDRESS`` (what Ray's job server
sets for a job's driver); ``vidan submit`` and ``vidan jobs`` talk to a job server named
by ``--address``, ``RAY_API_SERVER_ADDRESS`` or ``RAY_ADDRESS``, in Ray's order.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import socket
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlsplit

# A cluster that does not answer this fast is reported as unreachable: Ray's own
# connection loop would retry for tens of seconds, then print a traceback.
CONNECT_TIMEOUT_S = 5.0

# A job ships vidan's two package folders, never the repository (so never .git, a venv
# or reports); within them, no caches or stray data (Ray refuses uploads past ~100 MiB).
SHIP_EXCLUDES = ["__pycache__", "*.pyc", "*.parquet"]

# Keys of --storage-option that are credentials: a job's entrypoint is stored by the job
# server and shown in its dashboard, so they must come from the nodes' environment.
_SECRET_KEY = re.compile(r"secret|token|password|session|credential|access_key", re.IGNORECASE)


class ClusterError(Exception):
    """The cluster cannot be used: unreachable, refused us, or misnamed. One line, for the user."""


def cluster_address(address: Optional[str] = None) -> Optional[str]:
    """The Ray cluster ``vidan analyze`` joins, or None for a private local Ray.

    Inside a job started by Ray's job server, ``RAY_ADDRESS`` names the cluster the job
    belongs to: without it the job would analyse on a Ray of its own, beside the cluster.
    """
    given = address or os.environ.get("RAY_ADDRESS") or None
    if given and urlsplit(given).scheme in ("http", "https"):
        where = "--address" if address else "RAY_ADDRESS"
        raise ClusterError(f"{where}={given} is a job server (dashboard) address: use it with `vidan submit`, "
                           "or give `vidan analyze` the cluster's own address HOST:PORT (`ray start --port`, 6379 "
                           "unless changed)")
    return given


def job_server_address(address: Optional[str] = None) -> str:
    """The job server ``vidan submit`` and ``vidan jobs`` talk to."""
    given = (address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or "").strip()
    if not given:
        raise ClusterError("name the cluster's job server: --address http://HEAD:8265 (or RAY_API_SERVER_ADDRESS)")
    return given.rstrip("/")


def host_port(address: str) -> Optional[tuple[str, int]]:
    """Host and port of ``HOST:PORT``, ``[V6]:PORT`` or a URL; None for names Ray resolves itself ("auto")."""
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        raise ClusterError(f"{address!r} is not a cluster address: give HOST:PORT") from None
    if not parts.hostname:
        raise ClusterError(f"{address!r} is not a cluster address: give HOST:PORT")
    if port is None:
        if parts.scheme in ("http", "https"):
            return parts.hostname, 443 if parts.scheme == "https" else 80
        raise ClusterError(f"{address!r} has no port: give HOST:PORT")
    return parts.hostname, port


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Optional[str]:
    """Fail fast, in one line, when nothing answers at ``address``; its host when something does."""
    hp = host_port(address)
    if hp is None:
        return None
    try:
        socket.create_connection(hp, timeout=timeout_s).close()
    except socket.timeout:
        raise ClusterError(f"cannot reach a Ray cluster at {address}: no answer within {timeout_s:g} s") from None
    except OSError as e:
        reason = e.strerror or str(e)
        raise ClusterError(f"cannot reach a Ray cluster at {address}: {reason.lower()} (is `ray start --head` running "
                           "there, and is this the port it printed?)") from None
    return hp[0]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_available() -> bool:
    """Whether a Ray token is where Ray's documentation says to put one.

    In Ray's order: ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names, then
    ``~/.ray/auth_token`` (written by ``ray get-auth-token --generate`` and by ``ray.init``).
    """
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    try:
        text = Path(named or Path.home() / ".ray" / "auth_token").read_text().strip()
    except OSError as e:
        if named:  # Ray treats a named token file it cannot read as fatal, and so do we
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={named}: {(e.strerror or str(e)).lower()}") from None
        return False
    if named and not text:
        raise ClusterError(f"RAY_AUTH_TOKEN_PATH={named} is empty")
    return bool(text)


def split_storage_options(options: Sequence[str]) -> list[str]:
    """The ``--storage-option KEY=VALUE`` items a job may carry; credentials are refused."""
    secret = [o.partition("=")[0] for o in options if _SECRET_KEY.search(o.partition("=")[0])]
    if secret:
        raise ClusterError(f"--storage-option {', '.join(secret)}: credentials are not sent with a job (its command "
                           "line is stored and shown by the job server); set them in the cluster nodes' environment "
                           "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)")
    return list(options)


def analyze_entrypoint(args: Sequence[str], python: str = "python") -> str:
    """The shell command a job runs: ``python -m vidan analyze ARGS``, every argument quoted.

    Ray's job server hands the entrypoint to a shell, so a file name such as
    ``$(rm -rf ~).mp4`` must reach vidan as a name, never as a command.
    """
    return " ".join(shlex.quote(a) for a in [python, "-m", "vidan", "analyze", *args])


def shipped_code() -> list[str]:
    """The folders a job ships so the cluster runs this very vidan: its two packages."""
    import vidan

    here = Path(vidan.__file__).resolve().parent
    workers = here.parent / "workers"
    if not (workers / "__init__.py").exists():
        raise ClusterError(f"cannot ship vidan to the cluster: no workers package next to {here}")
    return [str(here), str(workers)]


def job_runtime_env(working_dir: str) -> dict:
    """Ray runtime environment of a vidan job: this vidan's packages first on the path.

    The cluster's Python must have vidan's dependencies (``pip install vidan``); the
    shipped packages take precedence over an installed vidan, so the job runs the code
    that submitted it. ``working_dir`` (files named on the command line, or nothing)
    becomes the job's current folder: without one the job starts where ``ray start`` was
    run, and a vidan checkout there would be imported before the shipped one.
    """
    return {"py_modules": shipped_code(), "excludes": list(SHIP_EXCLUDES), "working_dir": working_dir}


def absolute_input(path: str) -> str:
    """An input or output as the job sees it: URLs as given, local paths made absolute
    (the job starts in a folder of Ray's; the path must name shared storage)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
        return path
    return os.path.abspath(path)
