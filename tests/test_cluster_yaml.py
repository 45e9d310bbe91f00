"""ray_cluster.yaml passes Ray's own schema check offline, and says what vidan needs of it."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load() -> dict:
    return yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(cfg)
    validate_config(prepared)
    return prepared


def _version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_ray_cluster_yaml_passes_rays_validator():
    cfg = _validate(_load())
    assert cfg["head_node_type"] in cfg["available_node_types"]


def test_ray_validator_rejects_a_misspelt_node_type_field():
    # the check above must be able to fail: Ray's schema refuses unknown node-type keys
    import jsonschema

    cfg = _load()
    gpu = cfg["available_node_types"]["gpu_worker"]
    gpu["min_worker"] = gpu.pop("min_workers")
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        _validate(cfg)


def test_head_schedules_nothing_and_gpu_nodes_start_on_demand():
    types = _validate(_load())["available_node_types"]
    head = _load()["head_node_type"]
    assert types[head]["resources"].get("CPU") == 0
    workers = {name: t for name, t in types.items() if name != head}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in workers.values() if not t["resources"].get("GPU") and t["resources"].get("CPU", 0) > 0]
    assert gpu and cpu, "needs a GPU worker type and a CPU worker type for decoding"
    for t in gpu:
        # a GPU node costs money from the moment it starts: only the autoscaler starts one
        assert t["min_workers"] == 0
        assert t["max_workers"] >= 1
        assert t["resources"].get("CPU", 0) > 0  # the GPU node's own CPUs feed its GPU
    assert 0 < _load()["idle_timeout_minutes"] <= 15


def test_setup_installs_this_vidan_from_a_real_path():
    cfg = _load()
    text = (ROOT / "ray_cluster.yaml").read_text()
    assert "example.invalid" not in text and "git+" not in text
    commands = [*cfg["setup_commands"], *cfg["head_setup_commands"], *cfg["worker_setup_commands"]]
    assert not [c for c in commands if re.search(r"\w+://", c)], "setup fetches from a URL: vidan comes from the wheel"
    wheel = f"vidan-{_version()}-py3-none-any.whl"
    mounted = {remote: local for remote, local in cfg["file_mounts"].items() if remote.endswith(".whl")}
    assert mounted, "file_mounts copies no wheel to the nodes"
    (remote, local), = mounted.items()
    assert local == f"dist/{wheel}", f"the mounted wheel is not this checkout's version ({wheel})"
    assert Path(remote).name == wheel
    # setup_commands run on every node (Ray merges them into head and worker setup)
    installs = [c for c in cfg["setup_commands"] if "pip install" in c]
    assert any(remote in c for c in installs), "no setup command installs the mounted wheel"
    assert any("vidan.models.cache --prepare" in c for c in cfg["setup_commands"])


def test_dashboard_and_ray_are_guarded():
    cfg = _load()
    head_cmds = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds  # the dashboard is not exposed by default
    assert "0.0.0.0" not in head_cmds
    # token authentication on every node: the token travels with file_mounts, the mode with ~/.bashrc
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    assert any("RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in cfg["setup_commands"])


def test_storage_keys_come_from_a_mounted_file_never_from_this_one():
    cfg = _load()
    assert cfg["file_mounts"].get("~/.vidan/s3.env") == "~/.vidan/s3.env"
    # the file is exported into the shell every Ray command starts from
    assert any(". ~/.vidan/s3.env" in c and "set -a" in c and ".bashrc" in c for c in cfg["setup_commands"])
    assert not re.search(r"AWS_[A-Z_]+\s*[=:]", (ROOT / "ray_cluster.yaml").read_text())
