"""Reaching Ray: an embedded local Ray on 127.0.0.1, or a cluster named by address.

Every way a cluster can refuse us (not answering, answering elsewhere, asking for a token
we lack or refusing the one we send) becomes one ``ClusterError`` line before any actor
or report folder exists. Ray's own defaults are kept where they are safe: token
authentication stays on for the embedded Ray, which listens only on loopback.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from vidan.cluster import ClusterError, check_reachable, cluster_address, is_loopback, token_available

log = logging.getLogger("vidan")


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


def _token_auth_for_embedded() -> None:
    """Ray turns token authentication on for a new local cluster (a token made once, in
    ``~/.ray/auth_token``) unless RAY_AUTH_MODE says otherwise, and warns on every start
    that it did, naming the variable that turns it off. vidan keeps it on: the same
    setting, chosen explicitly, so a run's console carries no advice to weaken it."""
    if "RAY_AUTH_MODE" not in os.environ:
        _token_mode()


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
    _token_mode()


def _token_mode() -> None:
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its config once imported: read the mode again, as Ray does when it turns it on
        from ray._raylet import Config as RayConfig

        RayConfig.initialize("")
    except ImportError:
        pass


def first_line(e: BaseException) -> str:
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
        raise ClusterError(f"could not join the Ray cluster at {address}: {first_line(e)}") from None


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
    _token_auth_for_embedded()
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, _temp_dir=temp_dir, **kwargs)
    return True


def stop_ray() -> None:
    """``ray.shutdown()`` for the Ray that ``init_ray`` started, a second sooner.

    Ray stops its processes one after another, giving each a second to exit on SIGTERM.
    Its autoscaler monitor never makes it: its SIGTERM handler reports to the GCS, which
    is stopped before it, so every embedded run waited 1.0 s for the SIGKILL that came
    next (shutdown took 1.5 s, 0.5 s without that wait). The monitor has nothing to scale
    on a local Ray that is ending; it gets that SIGKILL first. Only a Ray this process
    started has its monitor here: a driver that joined a cluster holds none of the
    cluster's processes, and the cluster's monitor (its GPU nodes' autoscaler) lives on.
    The handle is Ray's private node object: a Ray without it shuts down as before, slower.
    """
    import ray

    try:
        node = ray._private.worker._global_node
        if node is not None and node.head:
            node.kill_monitor(check_alive=False)
    except Exception as e:  # a faster shutdown is not worth failing one
        log.debug("could not stop Ray's autoscaler monitor first: %s", e)
    ray.shutdown()
