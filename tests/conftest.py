"""Shared fixtures: one local Ray for the whole session, media built on the fly."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import pytest

# Stay offline: model code must never reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def no_error_logs(caplog):
    """A test that logs an ERROR fails: errors are never silent."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, f"ERROR logged: {[r.getMessage() for r in errors]}"


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray on 127.0.0.1 with 2 CPUs, started once (it costs ~4 s)."""
    from workers.ray_executor import init_ray

    import ray

    # A short private temp dir: Ray's socket paths must stay under ~100 characters, and a
    # stale /tmp/ray left by a killed session must not be picked up.
    temp = tempfile.mkdtemp(prefix="vray", dir="/tmp")
    init_ray(num_cpus=2, temp_dir=temp)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
