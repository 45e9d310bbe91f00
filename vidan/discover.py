"""Find the files to analyse under the paths a user gives, and say why others were left out.

Rules, in the order they apply:

* Folders are walked recursively in sorted order, so two runs see the same files in the
  same order. Symlinks to files and folders are followed; a folder symlink that points
  at one of its own ancestors is reported as ``symlink loop``, one that reaches a folder
  already walked as ``duplicate of <first path>``; a dangling one as ``broken symlink``.
* Entries whose name starts with "." inside a walked folder (``.git``, ``.cache``,
  macOS ``._clip.mp4`` resource forks, ``.DS_Store``) are skipped with reason
  ``hidden``: they are tool metadata far more often than footage, and resource forks
  carry a video extension but no video. A hidden path given by name is walked.
* FIFOs, sockets and devices are never opened (reading a FIFO blocks forever).
* The same file reached twice (symlink, hard link) or the same bytes under two names
  (same ``video_id``) is analysed once: the first in walk order; the others are skipped
  as ``duplicate of <first path>``.
* A folder holding a vidan report (its ``_vidan`` marker) is skipped as ``vidan report``:
  ``vidan analyze . --out reports`` must not analyse its own output. Nothing else under
  ``--out`` is left out.
* What is media is decided by content. A file with a media extension, or named directly
  by the user, always becomes a candidate (a probe failure gives it a failed row). A file without one becomes a
  candidate only when probing finds an audio or video stream; plain text files without
  a media extension are skipped unprobed, which keeps folders of documents fast and
  keeps ffmpeg's demuxers away from playlists and concat scripts that name other files.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence, Union

from vidan.media.isolate import probe_isolated
from vidan.records import MediaError, MediaInfo

MEDIA_EXTENSIONS: frozenset[str] = frozenset({
    # video containers
    ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".mk3d", ".webm", ".avi", ".divx", ".mpg", ".mpeg", ".mpe", ".m1v",
    ".m2v", ".mpv", ".ts", ".mts", ".m2ts", ".m2t", ".tp", ".trp", ".flv", ".f4v", ".wmv", ".asf", ".3gp",
    ".3g2", ".ogv", ".ogm", ".vob", ".mxf", ".dv", ".rm", ".rmvb", ".nut", ".y4m", ".h264", ".264", ".h265",
    ".265", ".hevc", ".ivf", ".gxf", ".wtv", ".dvr-ms", ".evo", ".mod", ".tod", ".insv", ".lrv",
    # audio containers
    ".m4a", ".m4b", ".mp3", ".mp2", ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aac", ".ac3", ".eac3",
    ".dts", ".wma", ".aif", ".aiff", ".aifc", ".caf", ".amr", ".awb", ".mka", ".alac", ".ape", ".wv", ".spx",
    ".au", ".snd", ".w64", ".tta", ".mpc", ".weba",
})

_TEXT_SNIFF = 8192

ProbeMany = Callable[[list[str]], list[Union[MediaInfo, MediaError]]]
# (path, size, mtime_ns, inode or ETag) -> the video id a report already holds for that file.
Known = Callable[[str, int, int, Union[int, str]], Optional[str]]


@dataclass(frozen=True)
class Candidate:
    """A file to analyse; it gets exactly one row in the ``videos`` report."""

    path: str  # absolute, as given or walked (symlinks not resolved); non-UTF-8 bytes kept as surrogates
    video_id: str  # 32 hex chars of blake2b over the whole content: same bytes, same id
    size_bytes: int
    error: Optional[str] = None  # set when the file must get a failed row without probing
    # stat when walked: with path and size, lets the next run trust video_id without reading
    mtime_ns: Optional[int] = field(default=None, compare=False)
    inode: Optional[int] = field(default=None, compare=False)
    known: bool = field(default=False, compare=False)  # id taken from the report, file not read
    etag: Optional[str] = field(default=None, compare=False)  # object storage inputs only


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Discovery:
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


# --- walking -----------------------------------------------------------------------


@dataclass(frozen=True)
class _File:
    path: str
    size: int
    given: bool  # named by the user rather than found in a folder
    mtime_ns: int = 0
    inode: int = 0


def walk(paths: Sequence[Union[str, bytes, os.PathLike]]) -> tuple[list[str], list[Skipped]]:
    """All regular files under ``paths`` (files or folders), each real file once."""
    files, skipped = _walk(paths)
    return [f.path for f in files], skipped


def _walk(paths: Sequence[Union[str, bytes, os.PathLike]]) -> tuple[list[_File], list[Skipped]]:
    files: list[_File] = []
    skipped: list[Skipped] = []
    seen_files: dict[tuple[int, int], str] = {}
    seen_dirs: dict[tuple[int, int], str] = {}
    for given in paths:
        path = os.path.abspath(os.fsdecode(given))
        for item in _visit(path, seen_dirs, ancestors=(), hidden_ok=True):
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            entry_path, st = item
            key = (st.st_dev, st.st_ino)
            if key in seen_files:
                skipped.append(_again(entry_path, seen_files[key]))
                continue
            seen_files[key] = entry_path
            files.append(_File(entry_path, st.st_size, given=entry_path == path, mtime_ns=st.st_mtime_ns,
                               inode=st.st_ino))
    return files, skipped


def _visit(path: str, seen_dirs: dict, ancestors: tuple, hidden_ok: bool
           ) -> Iterator[Union[Skipped, tuple[str, os.stat_result]]]:
    if not hidden_ok and os.path.basename(path).startswith("."):
        yield Skipped(path, "hidden")
        return
    try:
        st = os.stat(path)  # follows symlinks
    except OSError as e:
        yield Skipped(path, _stat_failure(path, e))
        return
    if stat.S_ISREG(st.st_mode):
        yield path, st
        return
    if not stat.S_ISDIR(st.st_mode):
        yield Skipped(path, f"not a regular file ({_kind(st.st_mode)})")
        return
    key = (st.st_dev, st.st_ino)
    if key in ancestors:
        yield Skipped(path, "symlink loop")
        return
    if key in seen_dirs:
        yield _again(path, seen_dirs[key])
        return
    seen_dirs[key] = path
    if is_report_folder(path):
        yield Skipped(path, "vidan report")
        return
    try:
        with os.scandir(path) as it:
            names = sorted(entry.name for entry in it)
    except OSError as e:
        yield Skipped(path, f"unreadable: {_errno_text(e)}")
        return
    for name in names:
        yield from _visit(os.path.join(path, name), seen_dirs, ancestors + (key,), hidden_ok=False)


def is_report_folder(path: str) -> bool:
    """A folder vidan made for a report (its marker file says so)."""
    from vidan.store.manifest import MARKER

    try:
        with open(os.path.join(path, MARKER), "rb") as f:
            return b'"vidan-report"' in f.read(4096)
    except OSError:
        return False


def claim(first: dict[str, str], video_id: str, path: str, skipped: list) -> bool:
    """True when ``path`` is the first seen with ``video_id``; else it is skipped as a duplicate."""
    if video_id in first:
        skipped.append(Skipped(path, f"duplicate of {first[video_id]}"))
        return False
    first[video_id] = path
    return True


def _again(path: str, first: str) -> Skipped:
    # the same path twice (given twice, or a folder given inside another) is no duplicate
    return Skipped(path, "already included" if path == first else f"duplicate of {first}")


def _stat_failure(path: str, e: OSError) -> str:
    if os.path.islink(path):
        return "symlink loop" if e.errno == errno.ELOOP else "broken symlink"  # ELOOP: links chasing each other
    if isinstance(e, FileNotFoundError):
        return "not found"
    return f"unreadable: {_errno_text(e)}"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _errno_text(e: OSError) -> str:
    return f"[Errno {e.errno}] {e.strerror}" if e.errno is not None else str(e)


# --- content -----------------------------------------------------------------------


def _open(path: str) -> int:
    # O_NONBLOCK: if a FIFO was swapped in after the walk, fail instead of waiting forever
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))


def _read_at(fd: int, offset: int, n: int) -> bytes:
    parts = []
    while n > 0:
        data = os.pread(fd, n, offset)
        if not data:
            break
        parts.append(data)
        offset += len(data)
        n -= len(data)
    return b"".join(parts)


def content_id(path: str, skip_text: bool = False) -> tuple[Optional[str], int, bytes]:
    """(video_id, size, first bytes) of a file; raises OSError when it cannot be read.

    With ``skip_text``, a plain text file is not hashed (its id is None): folders of
    documents stay fast.
    """
    from vidan.store.keys import content_hash

    fd = _open(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"not a regular file ({_kind(st.st_mode)})")
        head = _read_at(fd, 0, _TEXT_SNIFF)
        if skip_text and is_plain_text(head):
            return None, st.st_size, head
        return content_hash(path, fd), st.st_size, head
    finally:
        os.close(fd)


def _path_id(path: str) -> str:
    """An id for a file whose content cannot be hashed (unreadable, empty): stable per path."""
    return hashlib.blake2b(b"path\0" + os.fsencode(path), digest_size=8).hexdigest()


def is_plain_text(head: bytes) -> bool:
    """No NUL bytes and valid UTF-8 (a sequence cut at the end of ``head`` is fine)."""
    if not head or b"\0" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def has_media_extension(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in MEDIA_EXTENSIONS


# --- discovery ---------------------------------------------------------------------


def discover(paths: Sequence[Union[str, bytes, os.PathLike]], *, probe_many: ProbeMany = probe_isolated,
             known: Optional[Known] = None, storage_options: Optional[dict] = None) -> tuple[Discovery, dict[str, Union[MediaInfo, MediaError]]]:
    """Candidates and skipped files under ``paths``, plus the probe result of each probed candidate.

    ``probe_many`` probes a list of paths and returns one ``MediaInfo`` or ``MediaError``
    per path, in order (by default in one isolated child process). ``known`` gives the
    id a report already holds for an unchanged file: such files are neither read nor
    probed (their candidates have ``known=True`` and no probe result). ``s3://`` inputs
    are listed and identified through ``vidan.sources``.
    """
    from vidan.sources import is_remote

    remote = [p for p in paths if is_remote(p)]
    files, skipped = _walk([p for p in paths if not is_remote(p)])
    by_id: dict[str, str] = {}
    # (path, video_id, size, always a candidate, mtime_ns, inode); probed after the cheap checks
    to_probe: list[tuple] = []
    slots: list[Union[Candidate, tuple]] = []  # walk order
    for f in files:
        # a file the user named is analysed whatever its name: its row says what went wrong
        always = f.given or has_media_extension(f.path)
        cached = known(f.path, f.size, f.mtime_ns, f.inode) if known is not None else None
        if cached is not None:
            if claim(by_id, cached, f.path, skipped):
                slots.append(Candidate(f.path, cached, f.size, mtime_ns=f.mtime_ns, inode=f.inode, known=True))
            continue
        try:
            video_id, size, head = content_id(f.path, skip_text=not always)
        except OSError as e:
            reason = _errno_text(e)
            if isinstance(e, FileNotFoundError):
                reason += " (the file disappeared during discovery)"
            if always:
                slots.append(Candidate(f.path, _path_id(f.path), f.size, error=reason, mtime_ns=f.mtime_ns,
                                       inode=f.inode))
            else:
                skipped.append(Skipped(f.path, f"unreadable: {reason}"))
            continue
        if size == 0:
            if always:
                slots.append(Candidate(f.path, _path_id(f.path), 0, error="empty file (0 bytes)", mtime_ns=f.mtime_ns,
                                       inode=f.inode))
            else:
                skipped.append(Skipped(f.path, "not a video: empty file (0 bytes)"))
            continue
        if not always and is_plain_text(head):
            skipped.append(Skipped(f.path, "not a video: text file"))
            continue
        if not claim(by_id, video_id, f.path, skipped):
            continue
        job = (f.path, video_id, size, always, f.mtime_ns, f.inode)
        to_probe.append(job)
        slots.append(job)

    results = _probe_all(probe_many, [job[0] for job in to_probe])
    discovery = Discovery(skipped=skipped)
    probes: dict[str, Union[MediaInfo, MediaError]] = {}
    for slot in slots:
        if isinstance(slot, Candidate):
            discovery.candidates.append(slot)
            continue
        path, video_id, size, always, mtime_ns, inode = slot
        result = results[path]
        if always or _is_media(result):
            discovery.candidates.append(Candidate(path, video_id, size, mtime_ns=mtime_ns, inode=inode))
            probes[path] = result
        else:
            why = result.message if isinstance(result, MediaError) else "no audio or video stream"
            skipped.append(Skipped(path, not_a_video(why)))
    for uri in remote:
        from vidan.sources import remote_candidates

        cands, skips, found = remote_candidates(os.fspath(uri), known, storage_options)
        for c in cands:
            if claim(by_id, c.video_id, c.path, skipped):
                discovery.candidates.append(c)
                if c.path in found:
                    probes[c.path] = found[c.path]
        skipped.extend(skips)
    return discovery, probes


def not_a_video(why: str) -> str:
    """The reason a file is skipped; the prober may have said "not a video" already."""
    return why if why.startswith("not a video") else f"not a video: {why}"


def _probe_all(probe_many: ProbeMany, paths: list[str]) -> dict[str, Union[MediaInfo, MediaError]]:
    if not paths:
        return {}
    results = probe_many(paths)
    if len(results) != len(paths):
        raise RuntimeError(f"probe_many returned {len(results)} results for {len(paths)} paths")
    return dict(zip(paths, results))


def _is_media(result: Union[MediaInfo, MediaError]) -> bool:
    # the prober already refuses still images, so any audio or video stream here is media
    return isinstance(result, MediaInfo) and (result.has_video or result.has_audio)
