import numpy as np
import pytest

from vidan.config import ConfigError
from vidan.fusion import conse, fuse, l2_normalize
from vidan.tags import (Taxonomy, TaxonomyClass, audio_tags, classify, keywords, load_taxonomy, visual_labels)


def unit(*v):
    return l2_normalize(np.array(v, np.float32))


def test_fuse_renormalises_weights_over_present_modalities():
    f = fuse({"visual": unit(1, 0), "text": None}, {"visual": 0.5, "text": 0.5})
    assert f.weights == {"visual": 1.0, "text": 0.0}
    assert f.present == {"visual": True, "text": False}
    assert np.allclose(f.embedding, [1, 0])
    both = fuse({"visual": unit(1, 0), "text": unit(0, 1)}, {"visual": 0.5, "text": 0.5})
    assert np.allclose(both.embedding, unit(1, 1)) and np.isclose(np.linalg.norm(both.embedding), 1)


def test_fuse_with_nothing_present_is_zero():
    f = fuse({"visual": None, "text": None}, {"visual": 0.5, "text": 0.5})
    assert not any(f.present.values()) and f.embedding.size == 0


def test_conse_is_the_weighted_mean_of_top_labels():
    labels = np.eye(4, dtype=np.float32)
    v, conf = conse(np.array([0.6, 0.3, 0.1, 0.0]), labels, top_t=2)
    assert np.allclose(v, unit(0.6, 0.3, 0, 0))
    # 0.9 of the mass in the top two, and two orthogonal labels shorten the mean
    assert conf == pytest.approx(0.9 * np.linalg.norm([2 / 3, 1 / 3]))
    _, sure = conse(np.array([0.97, 0.01, 0.01, 0.01]), labels, top_t=2)
    assert sure > conf


def test_classify_threshold_allows_no_tag():
    classes = np.stack([unit(1, 0), unit(0, 1)])
    tags = classify(unit(1, 0.1), classes, ["a", "b"], threshold=0.5, top_k=3)
    assert [t.label for t in tags] == ["a"] and tags[0].source == "fused"
    assert classify(unit(-1, -1), classes, ["a", "b"], threshold=0.3, top_k=3) == []


def test_visual_labels_and_audio_tags():
    probs = np.array([0.7, 0.2, 0.05, 0.05])
    assert [t.label for t in visual_labels(probs, ["cat", "dog", "x", "y"], top_k=2, min_score=0.1)] == ["cat", "dog"]
    assert audio_tags(None, None) == []
    assert [t.label for t in audio_tags(0.8, -20.0)] == ["speech"]
    assert [t.label for t in audio_tags(0.0, -95.0)] == ["silence"]
    assert [t.label for t in audio_tags(0.0, -20.0)] == ["non_speech_sound"]


def test_keywords_skip_stopwords_and_rank_by_count():
    kw = keywords("The rocket, the rocket! It climbed into the blue sky.", 3)
    assert [t.label for t in kw][:1] == ["rocket"]
    assert all(t.kind == "keyword" and t.source == "text" for t in kw)
    assert "the" not in [t.label for t in kw]
    assert keywords(None, 5) == [] and keywords("", 5) == []


def test_default_taxonomy_loads_and_user_taxonomy_in_yaml_and_toml(tmp_path):
    t = load_taxonomy()
    assert len(t.classes) >= 8 and all(c.prompts for c in t.classes)
    y = tmp_path / "t.yaml"
    y.write_text("name: mine\nclasses:\n  - label: dogs\n    prompts: [a dog]\n  - cats\n")
    assert load_taxonomy(y) == Taxonomy("mine", "1", (TaxonomyClass("dogs", ("a dog",)), TaxonomyClass("cats", ("cats",))))
    toml = tmp_path / "t.toml"
    toml.write_text('name = "mine"\n[[classes]]\nlabel = "dogs"\nprompts = ["a dog"]\n')
    assert load_taxonomy(toml).labels == ["dogs"]


@pytest.mark.parametrize("text, why", [("classes: []\n", "non-empty 'classes' list"),
                                       ("classes:\n  - label: a\n  - label: a\n", "duplicate class label 'a'"),
                                       ("classes:\n  - prompts: [x]\n", r"classes\[0\] needs a 'label'")])
def test_bad_taxonomy_is_a_clear_error(tmp_path, text, why):
    p = tmp_path / "t.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=why):
        load_taxonomy(p)
