"""Discovery: which files get a row in the report, and why the others do not."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from vidan import discover as disc
from vidan import synth
from vidan.discover import Candidate, discover, walk
from vidan.media.isolate import probe_isolated
from vidan.records import STAGE_PROBE, MediaError, MediaInfo

# Every test probes with the real isolated prober (the default) on files made here: a
# prober's crash or hang is tested in test_isolate.py, so no fake prober is needed.

def counting_probe(calls: list):
    """The real isolated prober, recording which paths each call was given."""
    def probe_many(paths: list[str]) -> list:
        calls.append(list(paths))
        return probe_isolated(paths)

    return probe_many


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    path = synth.write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", [synth.Scene(0.5, (200, 20, 20))],
                             size=(64, 48))
    return path.read_bytes()


@pytest.fixture(scope="module")
def other_clip(tmp_path_factory) -> bytes:
    path = synth.write_video(tmp_path_factory.mktemp("clip2") / "clip.mp4", [synth.Scene(0.5, (20, 20, 200))],
                             size=(64, 48), seed=5)
    return path.read_bytes()


def _srt(path):
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    return path


def _reasons(discovery) -> dict[str, str]:
    return {s.path: s.reason for s in discovery.skipped}


def _paths(discovery) -> list[str]:
    return [c.path for c in discovery.candidates]


def test_nested_folders_in_sorted_order(tmp_path, clip, other_clip):
    (tmp_path / "b" / "deep" / "deeper").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "deep" / "deeper" / "z.mp4").write_bytes(clip)
    (tmp_path / "a" / "y.MKV").write_bytes(other_clip + b"\0")  # different bytes, upper-case extension
    (tmp_path / "b" / "notes.txt").write_text("shopping list")
    d, probes = discover([tmp_path])
    assert _paths(d) == [str(tmp_path / "a" / "y.MKV"), str(tmp_path / "b" / "deep" / "deeper" / "z.mp4")]
    assert all(isinstance(probes[p], MediaInfo) for p in _paths(d))
    assert _reasons(d) == {str(tmp_path / "b" / "notes.txt"): "not a video: text file"}
    ids = [c.video_id for c in d.candidates]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids) and len(set(ids)) == 2
    assert d.candidates[1].size_bytes == len(clip) and d.candidates[1].error is None


def test_relative_paths_become_absolute(tmp_path, monkeypatch, clip):
    (tmp_path / "v.mp4").write_bytes(clip)
    monkeypatch.chdir(tmp_path)
    d, _ = discover(["."])
    assert _paths(d) == [str(tmp_path / "v.mp4")]


def test_video_id_depends_on_bytes_not_path(tmp_path, clip):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "a.mp4").write_bytes(clip)
    (tmp_path / "two" / "b.mov").write_bytes(clip)
    d1, _ = discover([tmp_path / "one"])
    d2, _ = discover([tmp_path / "two"])
    assert d1.candidates[0].video_id == d2.candidates[0].video_id


def test_large_files_differing_in_the_middle_get_different_ids(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 5 << 20, dtype=np.uint8).tobytes()
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0xFF
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "b.bin").write_bytes(bytes(changed))
    (tmp_path / "c.bin").write_bytes(data)
    ids = [disc.content_id(str(tmp_path / n))[0] for n in ("a.bin", "b.bin", "c.bin")]
    assert ids[0] != ids[1] and ids[0] == ids[2]


def test_symlink_loop_terminates_and_is_reported(tmp_path, clip):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "v.mp4").write_bytes(clip)
    os.symlink("..", tmp_path / "d" / "e" / "up")  # points at its own parent
    os.symlink("self", tmp_path / "d" / "self")  # a link to itself
    d, _ = discover([tmp_path])
    assert _paths(d) == [str(tmp_path / "d" / "e" / "v.mp4")]
    reasons = _reasons(d)
    assert reasons[str(tmp_path / "d" / "e" / "up")] == "symlink loop"
    assert reasons[str(tmp_path / "d" / "self")] == "symlink loop"


def test_dir_symlink_to_a_walked_folder_is_a_duplicate(tmp_path, clip):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "v.mp4").write_bytes(clip)
    os.symlink(tmp_path / "real", tmp_path / "zlink")
    d, _ = discover([tmp_path])
    assert _paths(d) == [str(tmp_path / "real" / "v.mp4")]
    assert _reasons(d) == {str(tmp_path / "zlink"): f"duplicate of {tmp_path / 'real'}"}


def test_same_file_twice_is_one_candidate(tmp_path, clip):
    (tmp_path / "a.mp4").write_bytes(clip)
    os.symlink(tmp_path / "a.mp4", tmp_path / "b_link.mp4")
    os.link(tmp_path / "a.mp4", tmp_path / "c_hardlink.mp4")
    shutil.copyfile(tmp_path / "a.mp4", tmp_path / "d_copy.mov")
    d, probes = discover([tmp_path, tmp_path / "a.mp4"])
    first = str(tmp_path / "a.mp4")
    assert _paths(d) == [first] and list(probes) == [first]
    expected = {str(tmp_path / n): f"duplicate of {first}" for n in ("b_link.mp4", "c_hardlink.mp4", "d_copy.mov")}
    assert _reasons(d) == {**expected, first: "already included"}  # a.mp4 was also given by name


def test_symlink_keeps_the_walked_path(tmp_path, clip):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "v.mp4").write_bytes(clip)
    (tmp_path / "view").mkdir()
    os.symlink(tmp_path / "store" / "v.mp4", tmp_path / "view" / "link.mp4")
    d, _ = discover([tmp_path / "view"])
    assert _paths(d) == [str(tmp_path / "view" / "link.mp4")]


def test_broken_symlink_and_missing_path(tmp_path):
    os.symlink(tmp_path / "nowhere.mp4", tmp_path / "dangling.mp4")
    d, _ = discover([tmp_path, tmp_path / "not-there"])
    assert d.candidates == []
    assert _reasons(d) == {str(tmp_path / "dangling.mp4"): "broken symlink", str(tmp_path / "not-there"): "not found"}


def test_content_decides_what_is_media(tmp_path, clip):
    from PIL import Image

    (tmp_path / "text.mp4").write_text("this is not a video\n")
    Image.fromarray(synth.photo("coffee")[:64, :64]).save(tmp_path / "photo.mp4", format="PNG")
    Image.fromarray(synth.photo("rocket")[:48, :48]).save(tmp_path / "cover", format="PNG")
    (tmp_path / "video_without_extension").write_bytes(clip)
    (tmp_path / "readme").write_text("hello, world — ünïcode too\n")
    (tmp_path / "blob").write_bytes(bytes(range(256)) * 40)
    # a real container with only a subtitle track: media to ffmpeg, but nothing to analyse
    synth.run_ffmpeg(["-i", _srt(tmp_path / "s.srt"), "-c:s", "srt", "-f", "matroska", tmp_path / "subtitles_only"])
    (tmp_path / "s.srt").unlink()
    d, probes = discover([tmp_path])
    assert _paths(d) == [str(tmp_path / n) for n in ("photo.mp4", "text.mp4", "video_without_extension")]
    text = probes[str(tmp_path / "text.mp4")]
    assert isinstance(text, MediaError) and text.stage == STAGE_PROBE
    assert text.message.startswith("not a media file: Invalid data found"), text.message
    assert probes[str(tmp_path / "photo.mp4")].message == "not a video: still image (png)"
    assert probes[str(tmp_path / "video_without_extension")].has_video
    assert _reasons(d) == {
        str(tmp_path / "readme"): "not a video: text file",
        str(tmp_path / "cover"): "not a video: still image (png)",
        str(tmp_path / "blob"): "not a video: not a media file: Invalid data found when processing input",
        str(tmp_path / "subtitles_only"): "not a video: no audio or video streams (found: subtitle)",
    }


def test_audio_only_file_without_extension_is_a_candidate(tmp_path):
    synth.lavfi(tmp_path / "tone.ogg", "sine=frequency=300", 0.5)
    os.rename(tmp_path / "tone.ogg", tmp_path / "tone")
    d, probes = discover([tmp_path])
    tone = probes[str(tmp_path / "tone")]
    assert _paths(d) == [str(tmp_path / "tone")] and tone.has_audio and not tone.has_video
    assert tone.duration_s == pytest.approx(0.5, abs=0.05)


def test_a_named_file_is_always_a_candidate(tmp_path):
    (tmp_path / "notes").write_text("not media")
    d, probes = discover([tmp_path / "notes"])
    assert _paths(d) == [str(tmp_path / "notes")]
    assert probes[str(tmp_path / "notes")].message == "not a media file: Invalid data found when processing input"


def test_empty_files(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "other.mkv").write_bytes(b"")  # same (no) content, but not a duplicate
    (tmp_path / "empty").write_bytes(b"")
    calls = []
    d, probes = discover([tmp_path], probe_many=counting_probe(calls))
    assert [(c.path, c.error, c.size_bytes) for c in d.candidates] == [
        (str(tmp_path / "empty.mp4"), "empty file (0 bytes)", 0), (str(tmp_path / "other.mkv"), "empty file (0 bytes)", 0)]
    assert d.candidates[0].video_id != d.candidates[1].video_id
    assert probes == {} and calls == []
    assert _reasons(d) == {str(tmp_path / "empty"): "not a video: empty file (0 bytes)"}


def test_hidden_entries_are_skipped_unless_named(tmp_path, clip):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "v.mp4").write_bytes(clip)
    (tmp_path / "._v.mp4").write_bytes(b"\0\5\26\7AppleDouble")
    d, _ = discover([tmp_path])
    assert d.candidates == []
    assert _reasons(d) == {str(tmp_path / ".git"): "hidden", str(tmp_path / "._v.mp4"): "hidden"}
    d, _ = discover([tmp_path / ".git"])
    assert _paths(d) == [str(tmp_path / ".git" / "v.mp4")]


def test_fifo_is_never_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    t0 = time.monotonic()
    d, _ = discover([tmp_path])
    assert time.monotonic() - t0 < 5
    assert _reasons(d) == {str(tmp_path / "pipe.mp4"): "not a regular file (fifo)"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_by_permission(tmp_path, clip):
    (tmp_path / "locked.mp4").write_bytes(clip)
    (tmp_path / "locked").write_bytes(clip)
    os.chmod(tmp_path / "locked.mp4", 0)
    os.chmod(tmp_path / "locked", 0)
    d, _ = discover([tmp_path])
    assert [(c.path, c.error) for c in d.candidates] == [(str(tmp_path / "locked.mp4"), "[Errno 13] Permission denied")]
    assert _reasons(d) == {str(tmp_path / "locked"): "unreadable: [Errno 13] Permission denied"}


def test_unreadable_file(tmp_path, clip, monkeypatch):
    # Tests run as root here, where chmod 000 does not stop reading: refuse the open instead.
    (tmp_path / "locked.mp4").write_bytes(clip)
    (tmp_path / "locked").write_bytes(clip)
    real_open = disc._open

    def refusing_open(path):
        if os.path.basename(path).startswith("locked"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path)

    monkeypatch.setattr(disc, "_open", refusing_open)
    d, probes = discover([tmp_path])
    assert d.candidates == [Candidate(str(tmp_path / "locked.mp4"), d.candidates[0].video_id, len(clip),
                                      error="[Errno 13] Permission denied")]
    assert probes == {}
    assert _reasons(d) == {str(tmp_path / "locked"): "unreadable: [Errno 13] Permission denied"}


def test_file_that_disappears_after_the_walk(tmp_path, clip, monkeypatch):
    for name in ("a.mp4", "b.mp4", "c"):
        (tmp_path / name).write_bytes(clip + name.encode())
    real_walk = disc._walk

    # Deleting between the walk and the read is a race no real run can be timed to hit:
    # the walk is wrapped, the reads and the prober stay real.
    def walk_then_delete(paths):
        found = real_walk(paths)
        os.remove(tmp_path / "a.mp4")
        os.remove(tmp_path / "c")
        return found

    monkeypatch.setattr(disc, "_walk", walk_then_delete)
    d, _ = discover([tmp_path])
    gone = d.candidates[0]
    assert gone.path == str(tmp_path / "a.mp4")
    assert gone.error.startswith("[Errno 2] No such file or directory") and "disappeared" in gone.error
    assert _reasons(d)[str(tmp_path / "c")].startswith("unreadable: [Errno 2]")


def test_file_that_disappears_before_the_probe(tmp_path, clip):
    (tmp_path / "a.mp4").write_bytes(clip)

    def delete_then_probe(paths):
        os.remove(paths[0])
        return probe_isolated(paths)

    d, probes = discover([tmp_path], probe_many=delete_then_probe)
    assert _paths(d) == [str(tmp_path / "a.mp4")]
    assert probes[str(tmp_path / "a.mp4")].message == "cannot read file: No such file or directory"


def test_hostile_and_undecodable_names(tmp_path, clip, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ["a b 'q' \"d\".mp4", "$(touch pwned).mp4", "`touch pwned2`;x.mp4", "new\nline.mp4", "-dash.mp4"]
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(names):
        (folder / name).write_bytes(clip + bytes([i]))
    raw = os.path.join(os.fsencode(folder), b"bad\xffname.mp4")
    with open(raw, "wb") as f:
        f.write(clip + b"raw")
    before = sorted(os.listdir(tmp_path))
    d, probes = discover([os.fsencode(folder)])
    assert len(d.candidates) == 6 and d.skipped == []
    assert all(isinstance(probes[c.path], MediaInfo) for c in d.candidates)
    assert all(isinstance(c.path, str) for c in d.candidates)
    assert raw in [os.fsencode(c.path) for c in d.candidates]  # the exact bytes survive
    assert sorted(os.listdir(tmp_path)) == before


def test_thousands_of_documents_are_fast(tmp_path, clip):
    for i in range(3000):
        (tmp_path / f"doc{i:04d}").write_text(f"line {i}\n")
    (tmp_path / "zz.mp4").write_bytes(clip)
    calls = []
    t0 = time.monotonic()
    d, _ = discover([tmp_path], probe_many=counting_probe(calls))
    assert time.monotonic() - t0 < 8  # one prober start-up (~1 s) and 3000 small reads
    assert calls == [[str(tmp_path / "zz.mp4")]] and _paths(d) == [str(tmp_path / "zz.mp4")]
    assert len(d.skipped) == 3000


def test_walk_lists_regular_files_once(tmp_path, clip):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x.txt").write_text("x")
    (tmp_path / "v.mp4").write_bytes(clip)
    os.symlink(tmp_path / "v.mp4", tmp_path / "s" / "w.mp4")
    files, skipped = walk([str(tmp_path)])
    # sorted order reaches the link first: the file itself is then the duplicate
    assert files == [str(tmp_path / "s" / "w.mp4"), str(tmp_path / "s" / "x.txt")]
    assert [(s.path, s.reason) for s in skipped] == [(str(tmp_path / "v.mp4"), f"duplicate of {tmp_path / 's' / 'w.mp4'}")]


def test_one_prober_sees_a_mixed_folder(tmp_path, clip):
    from PIL import Image

    (tmp_path / "v.mp4").write_bytes(clip)
    (tmp_path / "noext").write_bytes(clip + b"x")
    (tmp_path / "text.mp4").write_text("not a video")
    Image.fromarray(synth.photo("coffee")[:64, :64]).save(tmp_path / "photo.mp4", format="PNG")
    (tmp_path / "blob").write_bytes(bytes(range(256)) * 40)
    synth.lavfi(tmp_path / "tone.wav", "sine=frequency=300", 0.5)
    calls = []
    d, probes = discover([tmp_path], probe_many=counting_probe(calls))
    names = ("noext", "photo.mp4", "text.mp4", "tone.wav", "v.mp4")
    assert _paths(d) == [str(tmp_path / n) for n in names]
    assert calls == [[str(tmp_path / n) for n in ("blob", *names)]]  # one batch, one child
    assert probes[str(tmp_path / "v.mp4")].has_video and probes[str(tmp_path / "noext")].has_video
    assert probes[str(tmp_path / "tone.wav")].has_audio and not probes[str(tmp_path / "tone.wav")].has_video
    assert isinstance(probes[str(tmp_path / "text.mp4")], MediaError)
    assert isinstance(probes[str(tmp_path / "photo.mp4")], MediaError)
    assert _reasons(d) == {str(tmp_path / "blob"): "not a video: not a media file: Invalid data found when processing input"}


def test_folder_given_inside_another_is_walked_once(tmp_path, clip):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "v.mp4").write_bytes(clip)
    d, _ = discover([tmp_path, tmp_path / "sub"])
    assert _paths(d) == [str(tmp_path / "sub" / "v.mp4")]
    assert _reasons(d) == {str(tmp_path / "sub"): "already included"}
