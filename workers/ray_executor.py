"""Run vidan's stages on Ray actor pools: an embedded local Ray, or a cluster.

One pool per stage. Encoder pools ask for a share of a GPU when the cluster has GPUs
and run on CPU otherwise. Calls are queued here and handed to idle actors, so the
object store holds only the work in flight. A crashed actor is restarted by Ray
(``max_restarts``) and the call is retried a bounded number of times
(``MAX_TASK_RETRIES``): a file that keeps killing its worker fails alone, with the reason.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

from vidan.cluster import ClusterError, check_reachable, cluster_address, is_loopback, token_available
from vidan.config import Config
from vidan.records import VidanError
from vidan.stages import AUDIO, FINISH, STAGE_OF_KIND, VISUAL

log = logging.getLogger("vidan")



@dataclass(frozen=True)
class PoolPlan:
    size: int
    num_cpus: float
    num_gpus: float
    threads: int
    device: str


def plan_pools(cpus: float, gpus: float, device: str = "auto") -> dict[str, PoolPlan]:
    """How many actors of each stage, and what each asks for, on a cluster of this size.

    Decoding and Whisper dominate, so the visual and audio pools split the CPUs; the
    finishing stage (small text batches) is one actor that reserves no CPU so it can
    always be placed.
    """
    cpus = max(1.0, cpus)
    if gpus >= 1 and device != "cpu":
        n = max(1, int(gpus))
        per = max(1, int(cpus // (2 * n)))
        enc = dict(size=n, num_cpus=1.0, num_gpus=0.5, threads=per, device="cuda")
    else:
        n = max(1, int(cpus // 4))
        per = max(1, int(cpus // (2 * n)))
        enc = dict(size=n, num_cpus=min(1.0, cpus / 2), num_gpus=0.0, threads=per, device="cpu")
    return {
        VISUAL: PoolPlan(**enc),
        AUDIO: PoolPlan(**enc),
        FINISH: PoolPlan(size=1, num_cpus=0.0, num_gpus=0.0, threads=1, device=enc["device"]),
    }


def _keep_ray_on_loopback() -> None:
    """Make an embedded Ray pick 127.0.0.1 rather than the machine's public address.

    Ray reads this switch once, when it is first imported, and its own processes read
    it from the environment: set both. (Setting only node_ip_address hung here.)
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import sys

    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = False


def use_cluster_token() -> None:
    """Send a cluster the Ray token found where Ray documents it, unless RAY_AUTH_MODE says otherwise.

    ``ray start --head`` turns token authentication on when a token exists, but a client
    naming the cluster by address does not look for one (only ``address="auto"`` does), so
    it is refused with ``InvalidAuthToken`` until it gives up. Called only once a cluster
    has asked for a token: in token mode a client cannot create actors on a cluster that
    runs without token authentication.
    """
    if "RAY_AUTH_MODE" in os.environ or not token_available():
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its config once imported: read the mode again, as Ray does when it turns it on
        from ray._raylet import Config as RayConfig

        RayConfig.initialize("")
    except ImportError:
        pass


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


_TOKEN_REFUSED = ("the Ray cluster at {address} refused this client's token (token authentication): put the "
                  "cluster's token (`ray get-auth-token` on the head) in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                  "~/.ray/auth_token")


def prepare_connection(address: str) -> None:
    """Everything that can be checked about a cluster before joining it, each failure one line:
    that it answers, that it is reached where it listens, and that it accepts our token."""
    import ray

    host = check_reachable(address)
    if host is None:
        return
    if is_loopback(host):
        # a head started on 127.0.0.1 is reached there: without this Ray swaps 127.0.0.1
        # for this machine's public address, where nothing listens
        _keep_ray_on_loopback()
    try:
        from ray._raylet import GcsClient
    except ImportError:
        use_cluster_token()
        return
    # Only a cluster that asks for a token gets one: a client in token mode cannot create
    # actors on a cluster without token authentication (they are cancelled unscheduled).
    # Asking for the cluster id is the first call that needs the token; a refusal comes
    # back at once, where ray.init would retry it for 20 s before failing.
    for attempt in range(2):
        try:
            GcsClient(address=address)
            return
        except ray.exceptions.AuthenticationError:
            if attempt == 0 and "RAY_AUTH_MODE" not in os.environ and token_available():
                use_cluster_token()
                continue
            raise ClusterError(_TOKEN_REFUSED.format(address=address)) from None
        except Exception:  # anything else is ray.init's to find and report
            return


def connect_ray(address: str, **kwargs: Any) -> None:
    """Join the cluster at ``address``; a cluster that cannot be used is one ClusterError line."""
    import ray

    prepare_connection(address)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError) as e:
        chain, cause = [], e
        while cause is not None:
            chain.append(cause)
            cause = cause.__cause__
        if any(isinstance(c, ray.exceptions.AuthenticationError) or "InvalidAuthToken" in str(c) for c in chain):
            raise ClusterError(_TOKEN_REFUSED.format(address=address)) from None
        raise ClusterError(f"could not join the Ray cluster at {address}: {_first_line(e)}") from None


def init_ray(address: Optional[str] = None, *, num_cpus: Optional[int] = None, temp_dir: Optional[str] = None,
             quiet: bool = True) -> bool:
    """Join the cluster at ``address`` (else ``RAY_ADDRESS``), or start an embedded Ray bound
    to 127.0.0.1. True if this call initialised Ray."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=not quiet, logging_level=logging.WARNING,
                                  configure_logging=True)
    address = cluster_address(address)
    if address:
        connect_ray(address, **kwargs)
        return True
    _keep_ray_on_loopback()
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, _temp_dir=temp_dir, **kwargs)
    return True


# A call whose actor died is tried again on the restarted actor, a bounded number of
# times: calls that merely arrived while the actor was restarting go through, and a
# file that kills its worker every time fails after that many tries instead of looping.
MAX_TASK_RETRIES = 2


class RayExecutor:
    def __init__(self, address: Optional[str] = None, *, num_cpus: Optional[int] = None, device: str = "auto",
                 temp_dir: Optional[str] = None, quiet: bool = True, call_timeout_s: Optional[float] = None):
        # a cluster that cannot be reached is found before the report folder is touched
        self.address = cluster_address(address)
        if self.address:
            prepare_connection(self.address)
        # A call still running after this long is stuck (decoders have their own, shorter
        # limit in the isolated child; this catches a hang anywhere else): it is cancelled,
        # not retried, and its actor is restarted.
        self.call_timeout_s = call_timeout_s
        self.num_cpus = num_cpus
        self.device = device
        self.temp_dir = temp_dir
        self.quiet = quiet
        self._started_ray = False
        self._queues: dict[str, deque] = {}
        self._idle: dict[str, list] = {}
        self._inflight: dict[Any, tuple[int, str, Any]] = {}  # ref -> (handle, kind, actor)
        self._done: dict[int, Any] = {}
        self._next = 0
        self._deadline: dict[Any, float] = {}  # ref -> monotonic time when it counts as stuck
        self._stuck: dict[int, int] = {}  # handles of calls cut off for running too long

    def start(self, config: Config) -> dict[str, str]:
        import ray

        from workers.actors import AudioActor, FinishActor, VisualActor

        if self.call_timeout_s is None:
            self.call_timeout_s = 2 * config.limits.file_timeout_s + 60
        self._started_ray = init_ray(self.address, num_cpus=self.num_cpus, temp_dir=self.temp_dir, quiet=self.quiet)
        res = ray.cluster_resources()
        plans = plan_pools(res.get("CPU", 1.0), res.get("GPU", 0.0), self.device)
        classes = {VISUAL: VisualActor, AUDIO: AudioActor, FINISH: FinishActor}
        for kind, plan in plans.items():
            cls = ray.remote(classes[kind]).options(
                num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, max_restarts=-1, max_task_retries=MAX_TASK_RETRIES,
            )
            self._idle[kind] = [cls.remote(config, plan.device, plan.threads) for _ in range(plan.size)]
            self._queues[kind] = deque()
        ids = {
            "vision": ray.get(self._idle[VISUAL][0].model_id.remote()),
            "asr": ray.get(self._idle[AUDIO][0].model_id.remote()),
            **ray.get(self._idle[FINISH][0].model_ids.remote()),
        }
        return ids

    def submit(self, kind: str, *args: Any) -> int:
        h = self._next
        self._next += 1
        self._queues[kind].append((h, args))
        self._dispatch(kind)
        return h

    def _dispatch(self, kind: str) -> None:
        q, idle = self._queues[kind], self._idle[kind]
        while q and idle:
            h, args = q.popleft()
            actor = idle.pop()
            ref = actor.__call__.remote(*args)
            self._inflight[ref] = (h, kind, actor)
            self._deadline[ref] = time.monotonic() + self.call_timeout_s

    def wait(self, timeout: float) -> list[int]:
        import ray

        if not self._inflight:
            return []
        ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            self._deadline.pop(ref, None)
            h, kind, actor = self._inflight.pop(ref)
            self._done[h] = (ref, kind)
            self._idle[kind].append(actor)
            self._dispatch(kind)
            out.append(h)
        return out + self._cut_off_stuck()

    def _cut_off_stuck(self) -> list[int]:
        """Fail the calls that ran past ``call_timeout_s``: cancel each (so Ray does not
        retry it) and restart its actor. Returns their handles, now done."""
        import ray

        now = time.monotonic()
        out = []
        for ref in [r for r, d in self._deadline.items() if now > d]:
            h, kind, actor = self._inflight.pop(ref)
            del self._deadline[ref]
            log.warning("%s call ran past %g s: cancelled, worker restarted", kind, self.call_timeout_s)
            ray.cancel(ref)
            ray.kill(actor, no_restart=False)
            self._stuck[h] = 1
            self._done[h] = (ref, kind)
            self._idle[kind].append(actor)  # calls sent to it now wait for the restart
            self._dispatch(kind)
            out.append(h)
        return out

    def result(self, handle: int) -> Any:
        import ray
        from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

        ref, kind = self._done.pop(handle)
        stage = STAGE_OF_KIND[kind]
        if self._stuck.pop(handle, 0):
            raise VidanError(stage, f"timed out: still running after {self.call_timeout_s:g} s; "
                                    "the call was cancelled and its worker restarted")
        try:
            return ray.get(ref)
        except RayTaskError as e:
            log.debug("%s stage failed in a worker:\n%s", kind, e)  # the remote traceback, for --debug
            cause = e.cause if getattr(e, "cause", None) is not None else e
            if isinstance(cause, VidanError):
                raise cause from None
            raise VidanError(stage, f"{type(cause).__name__}: {cause}") from None
        except (RayActorError, WorkerCrashedError) as e:
            log.debug("%s worker died:\n%s", kind, e)
            # The actor died (native crash, out of memory); Ray restarts it for the next file.
            raise VidanError(stage, f"worker process died: {str(e).splitlines()[0]}") from None

    def shutdown(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        for actors in self._idle.values():
            for a in actors:
                ray.kill(a)
        for _, _, a in self._inflight.values():
            ray.kill(a)
        self._idle.clear()
        self._inflight.clear()
        if self._started_ray:
            ray.shutdown()
