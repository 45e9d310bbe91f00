"""The pipeline without Ray (LocalExecutor): the isolation limits turn a runaway decoder
into a row that says what happened, and the rest of the file still gets analysed."""

import pytest

import vidan
from vidan import synth
from vidan.config import Config
from vidan.synth import Scene


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    audio = synth.concat_audio(d / "a.wav", [(0.2, synth.speech_clip("cat"))])
    synth.write_video(d / "cat.mp4", [Scene(6.0, synth.photo("chelsea"))], audio=audio)
    audio.unlink()
    return d


def test_decoder_over_its_memory_limit_fails_alone(clip, tmp_path):
    cfg = Config().replace(limits={"memory_mb": 100})
    summary = vidan.analyze(clip, out=tmp_path, config=cfg, executor="local")
    row = vidan.load_report(tmp_path).videos.iloc[0]
    # the pictures are lost, what was said is not
    assert row.status == "partial" and row.error_stage == "decode"
    assert "memory limit of 100 MiB" in row.error_message
    segs = vidan.load_report(tmp_path).segments
    assert segs.visual_embedding.isna().all() and "sofa" in " ".join(segs.transcript).lower()
    assert summary.exit_code == 1


def test_time_limit_fails_the_file_with_the_reason(clip, tmp_path):
    cfg = Config().replace(limits={"file_timeout_s": 0.01})
    vidan.analyze(clip, out=tmp_path, config=cfg, executor="local")
    row = vidan.load_report(tmp_path).videos.iloc[0]
    assert row.status == "failed"
    assert "timed out" in row.error_message
