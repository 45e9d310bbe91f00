import pytest

from vidan.config import Config, ConfigError


def test_defaults_validate_and_hash_is_stable():
    a, b = Config(), Config()
    assert a.hash() == b.hash() and len(a.hash()) == 16


def test_hash_changes_with_results_not_with_limits():
    base = Config()
    assert base.replace(segments={"window_s": 5.0}).hash() != base.hash()
    assert base.replace(asr={"backend": "none"}).hash() != base.hash()
    assert base.replace(limits={"file_timeout_s": 10.0}).hash() == base.hash()


def test_from_yaml_and_toml(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("segments:\n  plan: fixed\n  window_s: 4\nasr:\n  backend: none\n")
    t = tmp_path / "c.toml"
    t.write_text('[segments]\nplan = "fixed"\nwindow_s = 4.0\n[asr]\nbackend = "none"\n')
    cy, ct = Config.load(y), Config.load(t)
    assert cy == ct
    assert cy.segments.plan == "fixed" and cy.segments.window_s == 4.0 and isinstance(cy.segments.window_s, float)


@pytest.mark.parametrize("data, words", [
    ({"segmnts": {}}, "segmnts"),
    ({"segments": {"plan": "scenes"}}, "plan"),
    ({"frames": {"sample_fps": "fast"}}, "sample_fps"),
    ({"asr": {"vad": "yes"}}, "vad"),
    ({"segments": {"min_s": 5, "max_s": 1}}, "min_s"),
])
def test_bad_config_is_a_clear_error(data, words):
    with pytest.raises(ConfigError, match=words):
        Config.from_dict(data)


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("segments: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config.load(p)
    assert not (tmp_path / "pwned").exists()


def test_readme_config_block_matches_the_defaults():
    """The configuration shown in README.md is the one the code uses."""
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Configuration\n.*?```yaml\n(.*?)```", readme, re.S).group(1)
    assert Config.from_dict(yaml.safe_load(block)) == Config()
