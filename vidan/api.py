"""``vidan.analyze``: the one call that runs the whole pipeline.

This is the top of the library: it may reach into ``workers/`` for the Ray executor.
Nothing below it does.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Optional, Sequence, Union

from vidan import __version__
from vidan.config import Config
from vidan.pipeline import LocalExecutor, RunSummary, run


def analyze(paths: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]], out: Union[str, os.PathLike], config: Optional[Config] = None,
            *, address: Optional[str] = None, executor: str = "ray", device: str = "auto",
            num_cpus: Optional[int] = None, progress: bool = False, quiet_workers: bool = True,
            retry_failed: bool = False, reprocess: bool = False, wait: bool = False,
            storage_options: Optional[dict] = None) -> RunSummary:
    """Analyse the videos in ``paths`` (files or folders) into the report at ``out``.

    ``out`` is created when missing; an existing report is updated incrementally:
    only new or changed files are analysed, results are committed as the run goes.
    ``retry_failed`` analyses files that failed before again; ``reprocess`` everything.
    ``wait`` waits for another run writing the same report instead of failing.

    ``executor="ray"`` runs on an embedded local Ray (bound to 127.0.0.1), or on the
    cluster at ``address``; an already initialised Ray is used as is.
    ``executor="local"`` runs every stage in this process, without Ray.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    config = (config or Config()).validate()
    if executor == "local":
        ex = LocalExecutor(device=device)
    elif executor == "ray":
        from workers.ray_executor import RayExecutor

        ex = RayExecutor(address, num_cpus=num_cpus, device=device, quiet=quiet_workers)
    else:
        raise ValueError(f"executor must be 'ray' or 'local', not {executor!r}")
    return run(list(paths), out, config, ex, progress=progress, retry_failed=retry_failed, reprocess=reprocess,
               wait=wait, device=device, storage_options=storage_options)


def tag(reports: Union[str, os.PathLike], taxonomy: Optional[Union[str, os.PathLike]] = None,
        config: Optional[Config] = None, *, wait: bool = False, device: str = "cpu",
        storage_options: Optional[dict] = None) -> int:
    """Recompute classification tags from the stored embeddings; no video is opened.

    Commits the new tags in one step; returns how many videos were re-tagged.
    """
    from vidan.pipeline import new_run_id
    from vidan.retag import retag_report
    from vidan.store import ReportStore, make_lock
    from vidan.store.keys import tag_key

    config = config or Config()
    if taxonomy is not None:
        config = config.replace(tags={"taxonomy": os.path.abspath(os.fspath(taxonomy))})
    store = ReportStore.open(reports, storage_options)
    run_id = new_run_id()
    lock = make_lock(store.storage, run_id)
    lock.acquire(wait=wait)
    started = time.time()
    try:
        key = tag_key(config)
        n = retag_report(store, config, key, device=device, run_id=run_id)
        store.cleanup(started=started)
        store.put_run({"run_id": run_id, "kind": "tag", "status": "finished", "started_at": _iso(started, "microseconds"),
                       "updated_at": _iso(time.time()), "host": socket.gethostname(), "vidan_version": __version__,
                       "tag_key": key, "taxonomy": config.tags.taxonomy, "version": store.latest().version,
                       "counts": {"retagged": n}})
        return n
    finally:
        lock.release()


def jobs(address: Optional[str] = None):
    """A Ray cluster's job server (``http://HEAD:8265``; default ``RAY_API_SERVER_ADDRESS``,
    then ``RAY_ADDRESS``): submit vidan runs to it, read their status and logs, stop them."""
    from workers.ray_jobs import Jobs

    return Jobs(address)


def _iso(t: float, timespec: str = "seconds") -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec=timespec)
