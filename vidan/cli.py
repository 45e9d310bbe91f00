"""The ``vidan`` command line.

Exit status:
  0  every input file was analysed (status ok)
  1  the run finished, but some files failed or were only partly analysed
  2  could not run: bad arguments, bad config, unusable output folder
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional, Sequence

EXIT_OK, EXIT_SOME_FAILED, EXIT_CANNOT_RUN = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidan", description="Analyse folders of video into parquet reports.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    a = sub.add_parser("analyze", help="analyse video files and folders into a report",
                       description="Analyse every video in the given files and folders; write OUT/videos, "
                                   "OUT/segments and OUT/skipped as parquet.")
    a.add_argument("paths", nargs="+", metavar="PATH", help="video files or folders (searched recursively)")
    a.add_argument("--out", "-o", required=True, metavar="DIR",
                   help="report folder or s3://bucket/prefix (created if missing)")
    a.add_argument("--config", metavar="FILE", help="a YAML or TOML config file (see README)")
    a.add_argument("--taxonomy", metavar="FILE", help="a YAML or TOML taxonomy for classification tags")
    a.add_argument("--segments", choices=["fixed", "shots", "shots+speech"], help="segment plan")
    a.add_argument("--window", type=float, metavar="SECONDS", help="length of fixed windows")
    a.add_argument("--frames-backend", choices=["pyav", "decord"], help="frame decoder tried first (default pyav)")
    a.add_argument("--sample-fps", type=float, metavar="FPS", help="frames a second sent to the image model")
    a.add_argument("--asr", choices=["faster-whisper", "openai-whisper", "none"], help="speech recognition backend")
    a.add_argument("--asr-model", metavar="NAME_OR_PATH", help="ASR model: a bundled name or a local path")
    a.add_argument("--language", metavar="CODE", help="spoken language (default: detect)")
    a.add_argument("--languages", metavar="CODES",
                   help="detect the spoken language among these only, e.g. en,fr,de (default: all Whisper knows)")
    a.add_argument("--address", metavar="ADDR", help="Ray cluster address (default: embedded local Ray)")
    a.add_argument("--local", action="store_true", help="run every stage in this process, without Ray")
    a.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where models run")
    a.add_argument("--num-cpus", type=int, metavar="N", help="CPUs for the embedded Ray")
    a.add_argument("--gpu-wait", type=float, metavar="SECONDS",
                   help="on a cluster with no GPU up yet, how long encoders wait for the autoscaler to start "
                        "one before running on CPU (default 0: do not wait)")
    a.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="object storage setting (endpoint, region, access_key_id, ...); repeatable")
    a.add_argument("--retry-failed", action="store_true", help="analyse files that failed in earlier runs again")
    a.add_argument("--reprocess", action="store_true", help="analyse every file again, even unchanged ones")
    a.add_argument("--wait", action="store_true", help="wait for another run writing the same report to finish")
    a.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    a.add_argument("--debug", action="store_true", help="show tracebacks and worker logs")

    t = sub.add_parser("tag", help="recompute classification tags from stored embeddings (no decoding)",
                       description="Re-tag every segment of a report with a taxonomy, from the embeddings the "
                                   "report stores; commits the new tags in one step. No video is opened.")
    t.add_argument("--reports", "-r", required=True, metavar="DIR", help="a report folder written by analyze")
    t.add_argument("--taxonomy", metavar="FILE", help="a YAML or TOML taxonomy (default: the bundled one)")
    t.add_argument("--config", metavar="FILE", help="a config file (its tags section: threshold, top_k)")
    t.add_argument("--wait", action="store_true", help="wait for a run writing the same report to finish")
    t.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="object storage setting (endpoint, region, access_key_id, ...); repeatable")
    t.add_argument("--debug", action="store_true", help="show tracebacks")

    r = sub.add_parser("runs", help="list the runs that wrote a report",
                       description="The history of a report: one line per run, newest last.")
    r.add_argument("--reports", "-r", required=True, metavar="DIR", help="a report folder written by analyze")
    r.add_argument("--json", action="store_true", help="one JSON object per line")
    r.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="object storage setting (endpoint, region, access_key_id, ...); repeatable")
    r.add_argument("--debug", action="store_true", help="show tracebacks")

    s = sub.add_parser("search", help="find the segments that match a text query")
    s.add_argument("query", help="what to look for, in plain words")
    s.add_argument("--reports", "-r", required=True, metavar="DIR", help="a report folder written by analyze")
    s.add_argument("--top", "-k", type=int, default=10, help="how many hits (default 10)")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="object storage setting (endpoint, region, access_key_id, ...); repeatable")
    s.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_job_parsers(sub, a)
    return p


# analyze's options that make no sense for a job on a cluster: the job joins the cluster
# it runs on, and the cluster sizes its own pools
_NOT_FOR_JOBS = {"help", "paths", "out", "address", "local", "num_cpus"}


def _add_job_parsers(sub, analyze: argparse.ArgumentParser) -> None:
    j = sub.add_parser("submit", help="run analyze on a Ray cluster, as a Ray job",
                       description="Submit `vidan analyze` to a Ray cluster's job server. The job runs this "
                                   "vidan's code; paths are as the cluster sees them (shared storage or s3://). "
                                   "Prints the job id.")
    j.add_argument("paths", nargs="+", metavar="PATH", help="video files or folders, as the cluster sees them")
    j.add_argument("--out", "-o", required=True, metavar="URI", help="report folder (shared storage) or s3://...")
    j.add_argument("--address", metavar="URL",
                   help="the job server, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS)")
    j.add_argument("--submission-id", metavar="ID",
                   help="a name for this run: a second submit with the same ID is refused, not run twice")
    j.add_argument("--wait-for-job", action="store_true",
                   help="print the job's log until it ends; exit as its vidan analyze did")
    # every other analyze option, shared with analyze's parser so the two never drift apart
    j.set_defaults(analyze_options=[])
    for action in analyze._actions:
        if action.dest not in _NOT_FOR_JOBS:
            j._add_action(action)
            j.get_default("analyze_options").append(action)

    jobs = sub.add_parser("jobs", help="status, logs or stop of a submitted job",
                          description="Look after a job that `vidan submit` started.")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    for name, what in (("status", "the job's status"), ("logs", "the job's log"), ("stop", "stop the job")):
        c = jobs_sub.add_parser(name, help=what)
        c.add_argument("job_id", metavar="ID", help="the id `vidan submit` printed, or its --submission-id")
        c.add_argument("--address", metavar="URL",
                       help="the job server, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS)")
        c.add_argument("--debug", action="store_true", help="show tracebacks")
        if name == "logs":
            c.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")


def _config(args):
    from vidan.config import Config

    cfg = Config.load(args.config) if args.config else Config()
    changes: dict[str, dict] = {}

    def put(section: str, key: str, value) -> None:
        if value is not None:
            changes.setdefault(section, {})[key] = value

    put("tags", "taxonomy", os.path.abspath(args.taxonomy) if args.taxonomy else None)
    put("segments", "plan", args.segments)
    put("segments", "window_s", args.window)
    put("frames", "backend", args.frames_backend)
    put("frames", "sample_fps", args.sample_fps)
    put("asr", "backend", args.asr)
    put("asr", "model", args.asr_model)
    put("asr", "language", args.language)
    put("asr", "languages", getattr(args, "languages", None))
    put("workers", "gpu_wait_s", getattr(args, "gpu_wait", None))
    return cfg.replace(**changes) if changes else cfg


def _analyze(args) -> int:
    from vidan.api import analyze
    from vidan.tags import load_taxonomy

    cfg = _config(args)
    load_taxonomy(cfg.tags.taxonomy)  # a bad taxonomy is an argument error, found before any work
    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing:
        raise _Usage(f"no such file or folder: {', '.join(missing)}")
    summary = analyze(args.paths, args.out, cfg, address=args.address, executor="local" if args.local else "ray",
                      device=args.device, num_cpus=args.num_cpus, progress=not args.quiet,
                      quiet_workers=not args.debug, retry_failed=args.retry_failed, reprocess=args.reprocess,
                      wait=args.wait, storage_options=_storage_options(args))
    if not args.quiet:
        print(summary.line(), file=sys.stderr)
        print(f"report: {summary.out}", file=sys.stderr)
        if summary.failed or summary.partial:
            _print_problems(summary.out, summary.run_id, _storage_options(args))
    return summary.exit_code


def _storage_options(args) -> dict:
    out = {}
    for item in getattr(args, "storage_option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _Usage(f"--storage-option takes KEY=VALUE, not {item!r}")
        out[key.strip()] = value
    return out


def _print_problems(out, run_id: str, options: dict) -> None:
    from vidan.report import load_report

    columns = ["path", "status", "error_stage", "error_message", "notes", "run_id"]
    v = load_report(out, storage_options=options,
                    columns={"videos": columns, "segments": ["video_id"], "skipped": ["path"]}).videos
    for r in v[(v.status != "ok") & (v.run_id == run_id)].itertuples():
        msg = r.error_message.splitlines()[0] if isinstance(r.error_message, str) and r.error_message else ""
        if not msg and r.notes is not None and len(r.notes):
            # a partial file has no error: what it lost is in its notes
            msg = "; ".join(r.notes[:2]) + (f"; and {len(r.notes) - 2} more" if len(r.notes) > 2 else "")
        stage = r.error_stage if isinstance(r.error_stage, str) else ""
        said = " ".join(x for x in (stage, msg) if x)
        print(f"  {r.status:8} {r.path}: {said}".rstrip(), file=sys.stderr)


def _search(args) -> int:
    from vidan.search import search

    hits = search(args.query, args.reports, top=args.top, storage_options=_storage_options(args))
    if args.json:
        for h in hits:
            print(json.dumps({"path": h.path, "video_id": h.video_id, "segment_index": h.segment_index,
                              "start_s": round(h.start_s, 3), "end_s": round(h.end_s, 3),
                              "score": round(h.score, 6), "modality": h.modality}))
        return EXIT_OK
    if not hits:
        print("no segments in this report", file=sys.stderr)
        return EXIT_OK
    print(_hits_table(hits, args.query))
    return EXIT_OK


# Tags that say nothing about what is in the picture: the sound and the language.
_NOT_SEEN = {"speech", "silence", "non_speech_sound"}


def _hits_table(hits, query: str) -> str:
    """The hits as a table a person reads: rank, file, mm:ss–mm:ss, score, and why it matched."""
    from vidan.report import clock

    files = [_short(h.path) for h in hits]
    width = max(4, *(len(f) for f in files))
    lines = [f"{'rank':>4}  {'file':<{width}}  {'time':<11}  {'score':>5}  why"]
    for i, (h, f) in enumerate(zip(hits, files), 1):
        lines.append(f"{i:>4}  {f:<{width}}  {clock(h.start_s) + '–' + clock(h.end_s):<11}  {h.score:5.3f}  "
                     f"{_why(h, query)}")
    return "\n".join(lines)


def _short(path: str, limit: int = 40) -> str:
    return path if len(path) <= limit else "…" + path[-(limit - 1):]


def _why(hit, query: str, limit: int = 60) -> str:
    """The query's words heard in the segment, or else what its pictures were labelled."""
    from vidan.search import _terms

    said = hit.transcript or ""
    words = said.split()
    wanted = _terms(query)
    matched = [i for i, w in enumerate(words) if _terms(w) & wanted]
    if matched:
        a = max(0, matched[0] - 3)
        b = min(len(words), max(matched[-1] + 4, a + 1))
        text = " ".join(words[a:b])
        text = text if len(text) <= limit else text[:limit - 1] + "…"
        return f'said "{"…" if a else ""}{text}{"…" if b < len(words) else ""}"'
    heard = {w.strip(".,;:!?\"'").lower() for w in words}
    seen = [t for t in hit.tags if t not in _NOT_SEEN and t.lower() not in heard and not (len(t) == 2 and t.islower())]
    if hit.modality != "text" and seen:
        return "seen: " + ", ".join(seen[:4])
    if said.strip():
        return f'said "{said.strip()[:limit - 1]}{"…" if len(said.strip()) >= limit else ""}"'
    return f"[{hit.modality}]"


def _tag(args) -> int:
    from vidan.api import tag
    from vidan.config import Config

    cfg = Config.load(args.config) if args.config else Config()
    n = tag(args.reports, args.taxonomy, cfg, wait=args.wait, storage_options=_storage_options(args))
    print(f"re-tagged {n} video(s) in {args.reports}", file=sys.stderr)
    return EXIT_OK


def _runs(args) -> int:
    from vidan.report import read_runs

    for r in read_runs(args.reports, _storage_options(args)):
        if args.json:
            print(json.dumps(r, sort_keys=True, default=str))
            continue
        c = r.get("counts", {})
        what = (f"re-tagged {c.get('retagged', 0)}" if r.get("kind") == "tag" else
                f"{c.get('new', 0)} new, {c.get('changed', 0)} changed, {c.get('unchanged', 0)} unchanged, "
                f"{c.get('ok', 0)} ok, {c.get('partial', 0)} partial, {c.get('failed', 0)} failed, "
                f"{c.get('superseded', 0)} superseded")
        print(f"{r.get('run_id')}  {r.get('status', '?'):9} {r.get('started_at', '')}  {r.get('host', '')}  "
              f"v{r.get('version', '?')}  {what}  key {r.get('analysis_key') or '-'}/{r.get('tag_key') or '-'}")
    return EXIT_OK


def _submit(args) -> int:
    import shutil
    import tempfile

    from vidan.api import jobs
    from vidan.cluster import absolute_input, analyze_entrypoint, job_runtime_env, split_storage_options
    from vidan.tags import load_taxonomy

    load_taxonomy(_config(args).tags.taxonomy)  # a bad config or taxonomy is found here, not on the cluster
    split_storage_options(args.storage_option)
    ship = tempfile.mkdtemp(prefix="vidan-submit-")
    try:
        argv = [*map(absolute_input, args.paths), "--out", absolute_input(args.out)]
        for action in args.analyze_options:
            value = getattr(args, action.dest)
            if value is None or value == action.default:
                continue
            flag = max(action.option_strings, key=len)
            if action.dest in ("config", "taxonomy"):
                # files named on this machine travel with the job, in its working folder
                name = action.dest + os.path.splitext(value)[1]
                shutil.copyfile(value, os.path.join(ship, name))
                argv += [flag, name]
            elif action.nargs == 0:
                argv.append(flag)
            else:
                argv += [x for v in (value if isinstance(value, list) else [value]) for x in (flag, str(v))]
        from vidan import __version__

        server = jobs(args.address)
        job_id = server.submit(analyze_entrypoint(argv), job_runtime_env(ship),
                               submission_id=args.submission_id,
                               metadata={"vidan_version": __version__, "vidan_out": absolute_input(args.out)})
    finally:
        shutil.rmtree(ship, ignore_errors=True)
    print(job_id, flush=True)
    if not args.wait_for_job:
        print(f"submitted; follow it with: vidan jobs logs {job_id} --follow --address {server.address}",
              file=sys.stderr)
        return EXIT_OK
    server.follow(job_id, out=sys.stderr)
    return _job_exit(server.info(job_id))


def _job_exit(info) -> int:
    status = str(info.status)
    said = info.message.strip().splitlines()[0] if info.message and info.message.strip() else ""
    print(f"job {info.submission_id}: {status}" + (f" ({said.rstrip(':,')})" if said else ""), file=sys.stderr)
    if status == "SUCCEEDED":
        return EXIT_OK
    code = getattr(info, "driver_exit_code", None)
    return code if code in (EXIT_SOME_FAILED, EXIT_CANNOT_RUN) else EXIT_CANNOT_RUN


def _jobs(args) -> int:
    from vidan.api import jobs

    server = jobs(args.address)
    if args.jobs_command == "status":
        info = server.info(args.job_id)
        code = getattr(info, "driver_exit_code", None)
        print(f"{args.job_id}  {info.status}" + (f"  exit {code}" if code is not None else "")
              + (f"  {info.message.strip().splitlines()[0]}" if info.message and info.message.strip() else ""))
    elif args.jobs_command == "logs":
        if args.follow:
            server.follow(args.job_id)
        else:
            sys.stdout.write(server.logs(args.job_id))
    else:
        stopped = server.stop(args.job_id)
        print(f"{args.job_id}: {'stopping' if stopped else 'not running'}")
    return EXIT_OK


class _Usage(Exception):
    pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from vidan import __version__

        print(f"vidan {__version__}")
        return EXIT_OK
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_CANNOT_RUN
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from vidan.cluster import ClusterError
    from vidan.config import ConfigError
    from vidan.store import OutputError

    commands = {"analyze": _analyze, "search": _search, "tag": _tag, "runs": _runs, "submit": _submit, "jobs": _jobs}
    try:
        return commands[args.command](args)
    except (ConfigError, OutputError, ClusterError, _Usage, FileNotFoundError, ValueError) as e:
        if debug:
            raise
        print(f"vidan: error: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        print("vidan: interrupted; batches committed so far are kept, the rest is not", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
