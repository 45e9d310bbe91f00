"""The pipeline without Ray (LocalExecutor): the isolation limits turn a runaway decoder
into a row that says what happened, and the rest of the file still gets analysed."""

import numpy as np
import pytest

import vidan
import vidan.pipeline
from vidan import synth
from vidan.config import Config
from vidan.synth import Scene
from vidan.wer import word_error_rate


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
    assert segs.visual_embedding.isna().all()
    said = " ".join(t for t in segs.sort_values("start_s").transcript if t)
    assert word_error_rate(synth.speech_text("cat"), said) <= 0.2, said
    assert summary.exit_code == 1


def test_time_limit_fails_the_file_with_the_reason(clip, tmp_path):
    cfg = Config().replace(limits={"file_timeout_s": 0.01})
    vidan.analyze(clip, out=tmp_path, config=cfg, executor="local")
    row = vidan.load_report(tmp_path).videos.iloc[0]
    assert row.status == "failed"
    assert "timed out" in row.error_message


def test_report_times_are_presentation_times_on_variable_frame_rate(tmp_path):
    """Every frame time the report gives is the time that frame was shown: decode the
    frame displayed at each reported time and read the time it carries in its pixels."""
    import av

    times = sorted({round(t, 3) for t in np.concatenate([np.arange(0, 3, 0.04), np.arange(3, 6, 0.5),
                                                          np.arange(6, 9, 0.1), [9.37, 9.9]])})
    src = tmp_path / "in"
    src.mkdir()
    path = synth.write_timecode_video(src / "vfr.mp4", times)
    vidan.analyze(src, out=tmp_path / "out", config=Config().replace(asr={"backend": "none"}), executor="local")
    segs = vidan.load_report(tmp_path / "out").segments
    reported = sorted(t for ts in segs.frame_times for t in ts) + list(segs.keyframe_s)
    assert len(reported) >= 9
    with av.open(str(path)) as c:
        shown = [(f.time, synth.read_timecode(f.to_ndarray(format="rgb24"))) for f in c.decode(video=0)]
    for t in reported:
        _, ms = max((x for x in shown if x[0] <= t + 1e-6), key=lambda x: x[0])  # the frame on screen at t
        assert ms == round(t * 1000), (t, ms)


class _Meddling(vidan.pipeline.LocalExecutor):
    """Runs the stages for real, but does something to the file after the first call."""

    def __init__(self, act):
        super().__init__()
        self.act = act
        self.calls = 0

    def wait(self, timeout):
        done = super().wait(timeout)
        self.calls += 1
        if self.calls == 1:
            self.act()
        return done


def test_a_file_that_changes_during_the_run_is_flagged(clip, tmp_path):
    import shutil

    from vidan.pipeline import run

    src = tmp_path / "in"
    shutil.copytree(clip, src)
    video = src / "cat.mp4"
    summary = run([src], tmp_path / "out", Config(), _Meddling(lambda: video.open("ab").write(b"\0" * 100)),
                  progress=False)
    row = vidan.load_report(tmp_path / "out").videos.iloc[0]
    assert row.status == "partial" and summary.partial == 1
    assert any("changed during the run" in n for n in row.notes)


def test_a_file_that_disappears_during_the_run_fails_alone(clip, tmp_path):
    import shutil

    from vidan.pipeline import run

    src = tmp_path / "in"
    shutil.copytree(clip, src)
    shutil.copy(src / "cat.mp4", src / "gone.mp4")
    with open(src / "gone.mp4", "ab") as f:
        f.write(b"\0")  # different content, so it is not skipped as a duplicate
    run([src], tmp_path / "out", Config(), _Meddling(lambda: (src / "gone.mp4").unlink()), progress=False)
    videos = vidan.load_report(tmp_path / "out").videos.set_index("path")
    gone = videos.loc[str(src / "gone.mp4")]
    assert gone.status == "failed" and "No such file" in gone.error_message
    assert videos.loc[str(src / "cat.mp4")].status == "ok"


def test_pictures_split_into_finer_parts_give_the_same_segments_frames_and_cuts(tmp_path):
    """``limits.frames_part_s`` only changes how the work is cut up: the sampled frames,
    the cuts (one falls on a seam), the segments and what the pictures say are the same."""
    src = tmp_path / "in"
    src.mkdir()
    audio = synth.concat_audio(tmp_path / "a.wav", [(0.5, synth.speech_clip("coffee"))])
    synth.write_video(src / "three.mp4", [Scene(4.0, synth.photo("rocket")), Scene(4.0, synth.photo("coffee")),
                                          Scene(4.0, synth.photo("chelsea"))], size=(192, 144), audio=audio)
    base = Config().replace(asr={"backend": "none"})
    reports = {}
    for name, part, calls in (("whole", 600.0, 1), ("fine", 4.0, 3)):
        ex = vidan.pipeline.LocalExecutor()
        summary = vidan.pipeline.run([src], tmp_path / name, base.replace(limits={"frames_part_s": part}), ex,
                                     progress=False)
        assert summary.ok == 1 and ex.stats()["decode"]["calls"] == calls
        reports[name] = vidan.load_report(tmp_path / name)
    whole, fine = (reports[n].segments.sort_values("start_s") for n in ("whole", "fine"))
    assert reports["fine"].videos.frames_sampled.iloc[0] == reports["whole"].videos.frames_sampled.iloc[0] == 12
    assert list(reports["fine"].videos.shot_cuts.iloc[0]) == list(reports["whole"].videos.shot_cuts.iloc[0])
    assert len(reports["fine"].videos.shot_cuts.iloc[0]) == 2  # the cut at 4 s lies on a seam
    assert whole[["start_s", "end_s", "keyframe_s"]].values.tolist() == fine[["start_s", "end_s", "keyframe_s"]].values.tolist()
    assert [list(t) for t in whole.frame_times] == [list(t) for t in fine.frame_times]
    assert [list(v) for v in whole.visual_labels] == [list(v) for v in fine.visual_labels]
    assert np.allclose(np.stack(whole.visual_embedding), np.stack(fine.visual_embedding), atol=1e-5)
