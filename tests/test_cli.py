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


def _word_saying_whisper(path, word=" coffee"):
    """Save a small random openai-whisper checkpoint built to say ``word`` over and over.

    No real openai-whisper weights install offline, and a random decoder mostly stops at
    once and says nothing (its positional embedding is not even initialised), which leaves
    nothing to check. So the encoder ignores the sound and puts out only the sinusoidal
    positions of its frames, decoder position i attends to frame 5 i (0.1 s a step), and
    the final norm always points at ``word``. whisper's real decoding and word alignment
    then give known words at times spread over the audio, the same on every run.
    """
    import torch
    from whisper.model import ModelDimensions, Whisper, sinusoids
    from whisper.tokenizer import get_tokenizer

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=1, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=64, n_text_state=64, n_text_head=1, n_text_layer=1)
    model = Whisper(dims)
    enc, dec = model.encoder, model.decoder
    block = dec.blocks[0]
    token = get_tokenizer(multilingual=True).encode(word)[0]
    with torch.no_grad():
        silenced = [*enc.conv1.parameters(), *enc.conv2.parameters(), *block.attn.out.parameters(),
                    *block.cross_attn.out.parameters(), *block.mlp[2].parameters()]
        for b in enc.blocks:
            silenced += [*b.attn.out.parameters(), *b.mlp[2].parameters()]
        for p in silenced:
            p.zero_()
        frames = sinusoids(dims.n_audio_ctx, dims.n_audio_state)
        dec.positional_embedding.copy_(10 * frames[torch.arange(dims.n_text_ctx) * 5])
        block.cross_attn.query.weight.copy_(torch.eye(dims.n_text_state))
        block.cross_attn.query.bias.zero_()
        block.cross_attn.key.weight.copy_(torch.eye(dims.n_text_state))
        dec.ln.weight.zero_()
        dec.ln.bias.copy_(20 * dec.token_embedding.weight[token] / dec.token_embedding.weight[token].norm())
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return path


def test_analyze_with_an_openai_whisper_checkpoint(tmp_path):
    """`--asr openai-whisper --asr-model PATH` loads a local checkpoint, its words reach the
    segments with their times, and its id lands in every row."""
    from vidan import load_report, synth
    from vidan.synth import Scene

    ckpt = _word_saying_whisper(tmp_path / "tiny-random.pt")
    src = tmp_path / "in"
    src.mkdir()
    synth.write_video(src / "talk.mp4", [Scene(4.0, synth.photo("coffee"))], audio=synth.speech_clip("coffee"))
    p = vidan("analyze", src, "--out", tmp_path / "out", "--local", "--quiet",
                          "--asr", "openai-whisper", "--asr-model", ckpt)
    assert p.returncode == 0, p.stderr
    rep = load_report(tmp_path / "out")
    assert rep.videos.status.tolist() == ["ok"]
    duration = rep.videos.duration_s.iloc[0]
    assert (rep.segments.models.apply(lambda m: m["asr"]) == f"openai-whisper:{ckpt.resolve()}").all()
    words = []
    for seg in rep.segments.itertuples():
        ws = list(seg.words)
        assert seg.transcript == " ".join(w["text"] for w in ws), (seg.transcript, ws)
        for w in ws:
            # a word belongs to the segment holding its midpoint, and lies inside the file
            assert 0.0 <= w["start_s"] <= w["end_s"] <= duration + 1e-6, w
            assert seg.start_s <= (w["start_s"] + w["end_s"]) / 2 < seg.end_s, (w, seg.start_s, seg.end_s)
        words += ws
    assert words and {w["text"] for w in words} == {"coffee"}, words
    assert [w["start_s"] for w in words] == sorted(w["start_s"] for w in words)
    assert '"backend":"openai-whisper"' in rep.videos.config.iloc[0]


def test_an_embedded_ray_keeps_token_auth_without_advice_to_drop_it(tmp_path):
    """Ray turns token authentication on for a new local cluster and then says, on every
    run, which variable turns it off. vidan keeps it on (the token is made once, where Ray
    keeps it) and the console free of that advice."""
    import os

    from vidan import synth
    from vidan.models.cache import cache_dir
    from vidan.synth import Scene

    folder = tmp_path / "videos"
    folder.mkdir()
    synth.write_video(folder / "a.mp4", [Scene(2.0, synth.photo("coffee"))], size=(160, 120), fps=10)
    home = tmp_path / "home"  # a user who never ran Ray: no token yet
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), VIDAN_CACHE=str(cache_dir()))
    p = run_vidan("analyze", folder, "--out", tmp_path / "out", "--quiet", env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "RAY_AUTH_MODE" not in p.stderr and "Token authentication" not in p.stderr, p.stderr
    assert (home / ".ray" / "auth_token").stat().st_size > 0  # token authentication was on


def test_the_closing_lines_say_why_each_file_is_not_ok(tmp_path):
    """Past the summary, one line a file that is not ok: a failed file's stage and error,
    a partial file's notes (it has no error), so nobody has to open the report to know."""
    from vidan import load_report, synth

    src = tmp_path / "in"
    src.mkdir()
    whole = synth.lavfi(tmp_path / "whole.mp4", "testsrc=size=160x120:rate=25", 4.0, "-c:v", "libx264",
                        "-movflags", "+faststart")
    data = whole.read_bytes()
    (src / "cut.mp4").write_bytes(data[: int(len(data) * 0.55)])  # the index (at the front) survives
    (src / "empty.mp4").write_bytes(b"")
    p = run_vidan("analyze", src, "--out", tmp_path / "out", "--local", "--asr", "none", timeout=300)
    assert p.returncode == 1, p.stderr
    videos = load_report(tmp_path / "out").videos.set_index("path")
    cut = videos.loc[str(src / "cut.mp4")]
    assert cut.status == "partial" and len(cut.notes)
    lines = {ln.split()[1].rstrip(":"): ln.split(None, 2) for ln in p.stderr.splitlines() if ln.startswith("  ")}
    assert lines[str(src / "cut.mp4")][0] == "partial" and cut.notes[0] in lines[str(src / "cut.mp4")][2]
    assert lines[str(src / "empty.mp4")][0] == "failed"
    assert lines[str(src / "empty.mp4")][2] == "discover empty file (0 bytes)"
    # stderr is a pipe here, as in cron or a Ray job's log: progress comes as whole lines
    assert "\r" not in p.stderr
    assert "analysing: 2/2 files (0 ok, 1 partial, 1 failed)" in p.stderr
