"""vidan runs as Ray jobs: submitted to a cluster's job server, followed, stopped.

Through Ray's Job Submission API (``ray.job_submission.JobSubmissionClient``), so a job
outlives the laptop or scheduler that submitted it, and the job server keeps its status
and logs. What a job carries (code, entrypoint) is decided in ``vidan.cluster``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import Iterator, Optional, TextIO

from vidan.cluster import ClusterError, check_reachable, job_server_address, token_available
from workers.connect import use_cluster_token

# Ray's JobSubmissionClient prefers these environment variables to the address it is
# given; an explicit --address must win, so they are hidden while the client is made.
_ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@contextlib.contextmanager
def _without(names) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _one_line(e: BaseException) -> str:
    text = str(e)
    # the job server's answers come as "Request failed with status code 404: <its text>.",
    # its text sometimes a whole traceback, whose last line says what went wrong
    if text.startswith("Request failed with status code") and ": " in text:
        text = text.split(": ", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Traceback"):
        lines = lines[-1:]
    return " ".join(" ".join(lines).split()).rstrip(". ") or type(e).__name__


class Jobs:
    """One cluster's job server, by address (``http://HEAD:8265``)."""

    def __init__(self, address: Optional[str] = None):
        from ray.exceptions import AuthenticationError
        from ray.job_submission import JobSubmissionClient

        self.address = job_server_address(address)
        if self.address.startswith(("http://", "https://")):
            check_reachable(self.address)
        # the token goes only to a job server that asks for one, as to a cluster (workers.connect)
        for attempt in range(2):
            try:
                with _without(_ADDRESS_VARS if address else ()):
                    self._client = JobSubmissionClient(self.address)
                return
            except AuthenticationError as e:
                if attempt == 0 and "RAY_AUTH_MODE" not in os.environ and token_available():
                    use_cluster_token()
                    continue
                raise ClusterError(f"the job server at {self.address} refused this client's token: put the cluster's "
                                   "token (`ray get-auth-token` on the head) in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH "
                                   f"or ~/.ray/auth_token ({_one_line(e)})") from None
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ClusterError(f"cannot use the job server at {self.address}: {_one_line(e)}") from None

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConnectionError, RuntimeError) as e:
            raise ClusterError(f"{what}: {_one_line(e)}") from None

    def exists(self, job_id: str) -> Optional[str]:
        """The status of job ``job_id``, or None when the cluster has no such job."""
        try:
            return str(self._client.get_job_info(job_id).status)
        except RuntimeError as e:
            if "404" in str(e) or "does not exist" in str(e):
                return None
            raise ClusterError(f"job {job_id}: {_one_line(e)}") from None

    def submit(self, entrypoint: str, runtime_env: dict, submission_id: Optional[str] = None,
               metadata: Optional[dict] = None) -> str:
        """Start ``entrypoint`` as a job; with ``submission_id``, at most once per cluster."""
        if submission_id:
            # asked first so a repeat uploads nothing; the job server's put-if-absent
            # below still refuses a repeat that races this one
            status = self.exists(submission_id)
            if status is not None:
                raise _already(submission_id, status)
        try:
            return self._client.submit_job(
                entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id, metadata=metadata,
                # The driver only schedules and commits: it reserves nothing, so it can start
                # on a head that offers no CPU (CPU: 0) instead of waiting there forever.
                entrypoint_num_cpus=0, entrypoint_num_gpus=0)
        except RuntimeError as e:
            if submission_id and "already exists" in str(e):
                raise _already(submission_id, self.exists(submission_id) or "unknown") from None
            raise ClusterError(f"the job server at {self.address} did not take the job: {_one_line(e)}") from None
        except ValueError as e:  # a runtime environment Ray refuses, e.g. an upload over its size limit
            raise ClusterError(f"cannot ship vidan to the cluster: {_one_line(e)}") from None

    def info(self, job_id: str):
        return self._call(f"job {job_id}", self._client.get_job_info, job_id)

    def logs(self, job_id: str) -> str:
        return self._call(f"job {job_id}", self._client.get_job_logs, job_id)

    def follow(self, job_id: str, out: TextIO = sys.stdout) -> None:
        """Print the job's log as it is written, until the job ends."""
        self.info(job_id)  # an unknown job is a clear error, not a closed stream

        async def tail() -> None:
            async for chunk in self._client.tail_job_logs(job_id):
                out.write(chunk)
                out.flush()

        self._call(f"job {job_id}", asyncio.run, tail())

    def stop(self, job_id: str) -> bool:
        return self._call(f"job {job_id}", self._client.stop_job, job_id)


def _already(job_id: str, status: str) -> ClusterError:
    return ClusterError(f"a job with submission id {job_id} was already submitted to this cluster (now {status}); "
                        "not submitting it again")
