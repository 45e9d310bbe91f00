"""The command line's contract: exit codes and clear errors for things a user gets wrong."""

import pytest

from log_guard import run_vidan


def vidan(*args, cwd=None):
    return run_vidan(*args, cwd=cwd, timeout=300)  # an ERROR on its stderr fails the test


def test_version_and_help():
    p = vidan("--version")
    assert p.returncode == 0 and p.stdout.startswith("vidan ")
    assert vidan().returncode == 2


def test_missing_input_is_exit_2(tmp_path):
    p = vidan("analyze", tmp_path / "nope", "--out", tmp_path / "out")
    assert p.returncode == 2
    assert "no such file or folder" in p.stderr and "Traceback" not in p.stderr


def test_bad_config_is_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("segments:\n  plan: sideways\n")
    p = vidan("analyze", tmp_path, "--out", tmp_path / "out", "--config", cfg)
    assert p.returncode == 2 and "plan" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("name, text", [("c.yaml", "segments: [unclosed\n"), ("c.toml", "segments = \n"),
                                        ("missing.yaml", None)])
def test_unreadable_config_is_exit_2(tmp_path, name, text):
    cfg = tmp_path / name
    if text is not None:
        cfg.write_text(text)
    p = vidan("analyze", tmp_path, "--out", tmp_path / "out", "--config", cfg)
    assert p.returncode == 2 and name in p.stderr and "Traceback" not in p.stderr


def test_unwritable_output_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = vidan("analyze", tmp_path, "--out", blocker / "out")
    assert p.returncode == 2 and "cannot write" in p.stderr


def test_bad_taxonomy_is_exit_2(tmp_path):
    tax = tmp_path / "t.yaml"
    tax.write_text("classes: []\n")
    p = vidan("analyze", tmp_path, "--out", tmp_path / "out", "--taxonomy", tax)
    assert p.returncode == 2 and "classes" in p.stderr


@pytest.mark.parametrize("args", [["--segments", "nope"], ["--asr", "nope"]])
def test_bad_choices_are_exit_2(tmp_path, args):
    assert vidan("analyze", tmp_path, "--out", tmp_path / "o", *args).returncode == 2


def test_search_without_report_is_exit_2(tmp_path):
    p = vidan("search", "cats", "--reports", tmp_path)
    assert p.returncode == 2 and "no vidan report" in p.stderr


def test_analyze_with_an_openai_whisper_checkpoint(tmp_path):
    """`--asr openai-whisper --asr-model PATH` loads a local checkpoint (here a small random
    one: no real weights install offline) and its id lands in every row."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    from vidan import load_report, synth
    from vidan.synth import Scene

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=64, n_text_state=64, n_text_head=2, n_text_layer=1)
    ckpt = tmp_path / "tiny-random.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": Whisper(dims).state_dict()}, ckpt)
    src = tmp_path / "in"
    src.mkdir()
    synth.write_video(src / "talk.mp4", [Scene(4.0, synth.photo("coffee"))], audio=synth.speech_clip("coffee"))
    p = vidan("analyze", src, "--out", tmp_path / "out", "--local", "--quiet",
                          "--asr", "openai-whisper", "--asr-model", ckpt)
    assert p.returncode == 0, p.stderr
    rep = load_report(tmp_path / "out")
    assert rep.videos.status.tolist() == ["ok"]
    assert (rep.segments.models.apply(lambda m: m["asr"]) == f"openai-whisper:{ckpt.resolve()}").all()
    assert rep.segments.transcript.map(lambda t: isinstance(t, str)).all()  # transcribed (random text), not null
    assert '"backend":"openai-whisper"' in rep.videos.config.iloc[0]
