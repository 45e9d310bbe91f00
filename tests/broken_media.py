"""Real broken media for failure tests: files that pass one stage and fail the next."""

from __future__ import annotations

from pathlib import Path

from vidan import synth


def ts_without_sps(path: Path) -> Path:
    """An MPEG-TS whose H.264 parameter sets are destroyed. It probes (the container has
    timing), but nothing can say the picture size, so decoding fails with a MediaError."""
    plain = path.with_name(path.stem + ".plain.ts")
    synth.run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2", "-c:v", "libx264", plain])
    raw = bytearray(plain.read_bytes())
    plain.unlink()
    for start in (b"\x00\x00\x00\x01\x67", b"\x00\x00\x01\x67"):  # NAL type 7: sequence parameter set
        i = raw.find(start)
        while i >= 0:
            raw[i + len(start) - 1] = 0x6E  # type 14, which decoders skip
            i = raw.find(start, i + 1)
    path.write_bytes(bytes(raw))
    return path
