"""``vidan.analyze``: the one call that runs the whole pipeline.

This is the top of the library: it may reach into ``workers/`` for the Ray executor.
Nothing below it does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

from vidan.config import Config
from vidan.pipeline import LocalExecutor, RunSummary, run


def analyze(paths: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]], out: Union[str, os.PathLike], config: Optional[Config] = None,
            *, address: Optional[str] = None, executor: str = "ray", device: str = "auto",
            num_cpus: Optional[int] = None, progress: bool = False, quiet_workers: bool = True) -> RunSummary:
    """Analyse the videos in ``paths`` (files or folders) and write a report to ``out``.

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
    return run(list(paths), Path(out), config, ex, progress=progress)
