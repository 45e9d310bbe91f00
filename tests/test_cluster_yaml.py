"""ray_cluster.yaml must pass Ray's own schema check, offline."""

from pathlib import Path

import yaml


def test_ray_cluster_yaml_is_valid():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(cfg))
    assert cfg["head_node_type"] in cfg["available_node_types"]
    head_cmds = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds  # the dashboard is not exposed by default
