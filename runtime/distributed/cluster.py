"""Start or join a Ray cluster, and turn Ray's failures into cmhash errors.

`address=None` or "local" starts an embedded local cluster (a laptop, CI, this project's 2-core
machines); any other value goes to `ray.init(address=...)`: "auto" (the cluster this node belongs
to, or $RAY_ADDRESS), "ray://head:10001" (Ray Client) or "head:6379". If a Ray session is already
running in this process, it is used as it is and left running.

Ray's own log lines go to stderr and are kept at ERROR level, so they never mix with data on
stdout (docs/PLATFORM-NOTES.md, "Ray").
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator, Sequence

from cmhash.errors import ClusterError, CmhashError, InvalidInputError, ShardUnavailableError, require

LOCAL = "local"


def ray_module(feature: str) -> ModuleType:
    """`import ray`, or MissingDependencyError naming the extra that installs it."""
    return require("ray", "ray", feature)


def _quiet_ray_data() -> None:
    """No progress bars or INFO lines from Ray Data: they would flood the user's terminal."""
    try:
        from ray.data import DataContext
    except ImportError:  # ray without the [data] extra: nothing to quiet
        return
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = False
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)


def init(address: str | None = None, *, num_cpus: int | None = None) -> ModuleType:
    """Start a local cluster (address None or "local") or connect to `address`; return the ray module."""
    ray = ray_module("the distributed runtime (--ray)")
    if ray.is_initialized():
        _quiet_ray_data()
        return ray
    quiet: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                                 configure_logging=True)
    try:
        if address in (None, "", LOCAL):
            ray.init(num_cpus=num_cpus, **quiet)
        else:
            if num_cpus is not None:
                raise InvalidInputError(f"num_cpus={num_cpus} only applies to a local cluster; a running cluster at "
                                        f"{address!r} has its own CPUs (drop num_cpus)")
            ray.init(address=address, **quiet)
    except CmhashError:
        raise
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, TimeoutError ...
        where = "a local Ray cluster" if address in (None, "", LOCAL) else f"the Ray cluster at {address!r}"
        raise ClusterError(f"could not start or reach {where}: {exc}. Check the address (e.g. ray://HEAD:10001 "
                           "or HEAD:6379, or 'auto' on a cluster node), or leave it out to start a local cluster"
                           ) from exc
    _quiet_ray_data()
    return ray


@contextmanager
def ray_cluster(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """`init` for the duration of the block; shuts Ray down afterwards only if this call started it."""
    ray = ray_module("the distributed runtime (--ray)")
    started = not ray.is_initialized()
    ray = init(address, num_cpus=num_cpus)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def cluster_cpus() -> int:
    """How many CPUs the connected cluster has (at least 1)."""
    ray = ray_module("the distributed runtime")
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def gather(refs: Sequence[Any], what: str, timeout_s: float | None = None,
           numbers: Sequence[int] | None = None) -> list[Any]:
    """`ray.get` of one object ref per shard (`numbers`: their shard numbers, default 0, 1, ...).

    A dead or unreachable shard becomes ShardUnavailableError naming it.
    An error the shard raised on purpose (a CmhashError) is re-raised as itself, not wrapped in
    Ray's RayTaskError with a remote traceback.
    """
    import ray
    from ray import exceptions as rx

    out = []
    for number, ref in zip(numbers if numbers is not None else range(len(refs)), refs):
        try:
            out.append(ray.get(ref, timeout=timeout_s))
        except rx.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, CmhashError):
                raise cause from None
            raise ClusterError(f"shard {number} failed during {what}: {cause or exc}") from exc
        except rx.GetTimeoutError as exc:
            raise ShardUnavailableError(
                f"shard {number} did not answer {what} within {timeout_s} s; it may be overloaded or its node "
                "unreachable. Retry, or restore it with ShardedIndex.restore_shard", shard=number) from exc
        except (rx.RayActorError, rx.ObjectLostError) as exc:
            raise ShardUnavailableError(
                f"shard {number} is unavailable during {what} (its Ray actor died: {type(exc).__name__}); its items "
                f"are missing, so no partial result is returned. Restore it from the last save with "
                f"index.restore_shard({number}), or reload the whole index with ShardedIndex.load(FOLDER)",
                shard=number) from exc
    return out
