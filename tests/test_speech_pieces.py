"""A long part's speech recognised in pieces (``split_s`` on the audio stage): runs of
whole Whisper windows (``window_runs``), recognised on several speech workers at once
and joined into the part's one transcript (``join_pieces``).

Pure layout checks; the executors' bookkeeping when a piece's part must be done again;
then the real bundled Whisper in-process, and a real local Ray run against an
in-process one.
"""

from __future__ import annotations

import numpy as np
import pytest

from vidan import synth
from vidan.config import Config
from vidan.models.asr import RATE, WINDOW_S, SpeechItem, pack_windows, window_runs
from vidan.models.asr.prepare import _prepare
from vidan.records import AudioPart, Span, VidanError, Word
from vidan.wer import word_error_rate

# bundled clips one after another, short pauses between them: about 105 s, 85 s of it
# speech, so three windows (a window holds up to 30 s of speech, pauses left out)
NAMES = ("coffee", "cat", "rocket", "bread", "weather", "football")
TALK = [(0.5 + 6.5 * i, NAMES[i % len(NAMES)]) for i in range(16)]


def _windows(audio, speech, shift=0):
    """The windows ``transcribe_many`` lays ``audio``'s speech into, as sample ranges."""
    p = _prepare(SpeechItem(audio, speech=speech), vad=False)
    ws = pack_windows({0: p.pieces}, window=int(WINDOW_S * RATE), gap=0, share=False)
    return [(w.pieces[0].src_start + shift, w.pieces[-1].src_end + shift) for w in ws]


def test_runs_are_whole_windows_in_order_laid_out_alone_as_in_the_whole():
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(300 * RATE) * 0.1).astype(np.float32)
    # short phrases, then 70 s without a pause (cut into window-sized pieces at quiet moments)
    speech = [(t, t + 4.5) for t in np.arange(1.0, 200.0, 6.0)] + [(205.0, 275.0), (280.0, 284.0)]
    whole = _windows(audio, speech)
    assert len(whole) >= 8
    for k in (1, 2, 3, 5, 8, 40):
        runs = window_runs(audio, speech, k)
        assert 1 <= len(runs) <= min(k, len(whole)), (k, runs)
        assert all(a < b for a, b in runs) and all(b <= a2 for (_, b), (a2, _) in zip(runs, runs[1:]))
        inside = [[w for w in whole if a <= w[0] and w[1] <= b] for a, b in runs]
        assert sum(len(ws) for ws in inside) == len(whole)  # every window in exactly one run
        for (a, b), ws in zip(runs, inside):
            assert ws and (a, b) == (ws[0][0], ws[-1][1])  # a run is whole windows
            # its speech, laid out alone, falls into the same windows
            lo, hi = a / RATE, b / RATE
            own = [(max(s, lo) - lo, min(e, hi) - lo) for s, e in speech if e > lo and s < hi]
            assert _windows(audio[a:b], own, shift=a) == ws, k
        sizes = [sum(e - s for s, e in ws) for ws in inside]
        assert max(sizes) <= sum(sizes) / len(runs) + WINDOW_S * RATE  # about equal speech
    assert window_runs(np.zeros(60 * RATE, np.float32), speech, 3) == []  # nothing to hear


def _part(words, language="en", nsp=0.1, loud=None):
    return AudioPart(span=Span(0.0, 90.0), words=[Word(s, s + 0.4, t, 0.9) for s, t in words], language=language,
                     language_probability=0.9 if words else None, no_speech_prob=nsp, speech=[Span(1.0, 2.0)],
                     loudness_hop_s=0.1, loudness_db=loud if loud is not None else np.zeros(0, np.float32))


def test_joined_pieces_keep_every_word_once_in_order_and_the_first_pieces_measurements():
    from vidan.stages.asr import join_pieces

    loud = np.full(900, -20.0, np.float32)
    joined = join_pieces([_part([(1.0, "a"), (2.0, "b")], loud=loud), _part([]), _part([(40.0, "c")], "fr", 0.7),
                          _part([(70.0, "d"), (71.0, "e")])])
    assert [w.text for w in joined.words] == ["a", "b", "c", "d", "e"]
    assert joined.language == "en" and joined.no_speech_prob == 0.7  # most words; the most doubtful window
    assert joined.loudness_db is loud and joined.speech == [Span(1.0, 2.0)]
    failed = VidanError("asr", "boom")
    assert join_pieces([_part([(1.0, "a")]), failed, _part([])]) is failed


def _job(seconds=90.0):
    from vidan.records import MediaInfo
    from vidan.stages import PartJob

    info = MediaInfo(path="/nowhere.mp4", size_bytes=1, container="mp4", duration_s=seconds, start_time_s=0.0,
                     streams=())
    return PartJob("v", "/nowhere.mp4", info, Span(0.0, seconds), 0, 1)


def test_a_piece_whose_part_is_lost_sends_the_whole_part_again_and_it_comes_back_once():
    """The executor's bookkeeping (no Ray needed: no actor is asked): a piece whose
    upstream result was lost with a node sends its whole part through the chain again,
    its other pieces are forgotten (a late result of one changes nothing), and the part
    comes back to the driver once, joined; a failed piece fails the part at once."""
    from workers.ray_executor import RayExecutor

    ex = RayExecutor()
    ex._config = Config()
    h = ex.submit("audio", _job())
    assert [x[0] for x in ex._queues["audio"]] == [h]
    ex._queues["audio"].popleft()  # sent to an audio actor, which cut it in three

    def cut(refs):
        pieces = ex._pieces(h, "audio", 1, 90.0, refs)
        ex._queues["asr"].extend((c, ref, ex._seconds[c]) for c, ref in pieces)
        return [c for c, _ in pieces]

    first = cut(["r0", "r1", "r2"])
    assert h not in ex._route and all(ex._route[c] == ("audio", 1) for c in first)
    assert ex._finish(first[0], _part([(1.0, "a")])) == []
    assert ex._again(first[1], "audio", 30.0)  # its upstream result was lost
    assert not ex._queues["asr"] and [x[0] for x in ex._queues["audio"]] == [h] and ex._route[h] == ("audio", 0)
    assert not any(c in ex._route for c in first)

    ex._queues["audio"].popleft()
    again = cut(["s0", "s1", "s2"])
    done = []
    for c, words in zip(reversed(again), ([(70.0, "c")], [], [(1.0, "a"), (2.0, "b")])):
        done += ex._finish(c, _part(words))
    assert done == [h]
    assert [w.text for w in ex.result(h).words] == ["a", "b", "c"]
    assert not ex._joins and not ex._parent and not ex._route

    h2 = ex.submit("audio", _job())
    ex._queues["audio"].popleft()
    pieces = [c for c, _ in ex._pieces(h2, "audio", 1, 90.0, ["t0", "t1", "t2"])]
    assert ex._finish(pieces[1], VidanError("asr", "worker process died")) == [h2]
    assert not any(c in ex._route for c in pieces)
    with pytest.raises(VidanError, match="worker process died"):
        ex.result(h2)


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """A 105 s video of speech: one audio part, three Whisper windows."""
    tmp = tmp_path_factory.mktemp("talk")
    wav = synth.concat_audio(tmp / "talk.wav", [(t, synth.speech_clip(n)) for t, n in TALK])
    seconds = len(synth.read_audio(wav)) / RATE + 1.0
    return synth.write_video(tmp / "talk.mp4", [synth.Scene(seconds, (40, 90, 160))], size=(160, 120), fps=10,
                             audio=wav)


def _text(words) -> str:
    return " ".join(w.text for w in words)


def test_pieces_recognised_one_by_one_give_the_words_of_the_whole_part(talk):
    """Each piece holds only its own samples and is recognised as a clip of its own (its
    own language detection); joined, the words are those of the whole part."""
    from vidan.media.probe import probe
    from vidan.stages import PartJob
    from vidan.stages.asr import AsrStage, join_pieces
    from vidan.stages.audio import AudioStage

    cfg = Config()
    info = probe(talk)
    (part,) = AudioStage(cfg).process([PartJob("v", str(talk), info, Span(0.0, info.duration_s), 0, 1)])
    pieces = AudioStage.split(part, 3)
    assert len(pieces) == 3 and all(p.heard_speech for p in pieces)
    assert sum(p.audio.size for p in pieces) <= part.audio.size
    assert all(p.loudness_db.size == 0 and p.events is None for p in pieces[1:])
    asr = AsrStage(cfg, device="cpu")
    (whole,) = asr.process([part])
    joined = join_pieces(asr.process(pieces))
    assert whole.language == joined.language == "en"
    assert len(whole.words) > 80
    assert word_error_rate(_text(whole.words), _text(joined.words)) <= 0.03
    starts = [w.start_s for w in joined.words]
    assert starts == sorted(starts)
    assert joined.loudness_db is part.loudness_db or np.array_equal(joined.loudness_db, part.loudness_db)
    assert joined.events is not None and np.array_equal(joined.events, part.events)


@pytest.mark.ray
def test_on_ray_a_long_parts_speech_goes_in_pieces_and_matches_in_process(ray_local, talk, tmp_path):
    import vidan
    from vidan.executor import LocalExecutor
    from vidan.pipeline import run
    from workers.ray_executor import RayExecutor

    class Watched(RayExecutor):
        asr_calls: list = []

        def shutdown(self):
            self.asr_calls = [a.calls for a in self._actors["asr"] + self._gone if a.slot.stage == "asr"]
            super().shutdown()

    cfg = Config()
    ray_ex = Watched()
    on_ray = run([str(talk)], tmp_path / "ray", cfg, ray_ex, progress=False)
    local = run([str(talk)], tmp_path / "local", cfg, LocalExecutor(), progress=False)
    assert on_ray.ok == local.ok == 1
    # three pieces, each a call of its own on a CPU worker: any free speech worker takes one
    assert sum(ray_ex.asr_calls) >= 3, ray_ex.asr_calls

    def transcript(out):
        segs = vidan.load_report(out).segments.sort_values("start_s")
        return " ".join(t for t in segs.transcript if t)

    assert len(transcript(tmp_path / "ray").split()) > 80
    assert word_error_rate(transcript(tmp_path / "local"), transcript(tmp_path / "ray")) <= 0.03
    assert vidan.load_report(tmp_path / "ray").videos.language.tolist() == ["en"]
