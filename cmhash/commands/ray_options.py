"""Options shared by the commands that can run on Ray (`encode images|texts`, `index build`).

Why a flag plus `--ray-address` rather than `--ray [ADDRESS]`: typer 0.29's parser has no options
with an optional value, so `--ray` alone starts a local cluster and `--ray-address` joins one.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

RayOption = Annotated[bool, typer.Option(
    "--ray", help="Run on a Ray cluster: a local one (all cores of this machine) unless --ray-address is given. "
                  "Needs the [ray] extra.")]
RayAddressOption = Annotated[Optional[str], typer.Option(
    "--ray-address", metavar="ADDRESS",
    help="Join this running Ray cluster (ray://HEAD:10001, HEAD:6379, or auto on a cluster node); implies --ray.")]
SearchRayAddressOption = Annotated[Optional[str], typer.Option(
    "--ray-address", metavar="ADDRESS",
    help="For a sharded index folder: join this running Ray cluster (ray://HEAD:10001, HEAD:6379, or auto) "
         "instead of starting a local one.")]
WorkersOption = Annotated[Optional[int], typer.Option(
    "--workers", min=1, help="With --ray: encoder actors, each loading the model once (default: one per cluster CPU).")]
ShardsOption = Annotated[Optional[int], typer.Option(
    "--shards", min=1, help="Build a sharded index on Ray, one actor per shard, saved into the --out folder "
                            "(a local cluster unless --ray-address).")]


def use_ray(ray: bool, address: Optional[str]) -> bool:
    """--ray-address implies --ray."""
    return ray or address is not None
