"""Scale the runtime out on Ray: distributed encoding and a sharded Hamming index.

    from cmhash.runtime.distributed import ray_cluster, ShardedIndex, encode_distributed
    with ray_cluster():                         # a local cluster; ray_cluster("ray://head:10001") joins one
        index = ShardedIndex(64, shards=4)      # one Ray actor per shard
        index.add(codes, ids)
        dist, ids = index.search(queries, k=10)  # exactly what one HammingIndex would return
        index.save("db.shards")

Ray is optional (`pip install 'cmhash[ray]'`). Nothing here imports it at module level, so the
torch-free runtime still imports without it; using a feature without Ray raises
MissingDependencyError naming the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ShardedIndex", "ray_cluster", "encode_distributed", "read_code_shards"]

if TYPE_CHECKING:
    from cmhash.runtime.distributed.cluster import ray_cluster
    from cmhash.runtime.distributed.code_shards import read_code_shards
    from cmhash.runtime.distributed.encode import encode_distributed
    from cmhash.runtime.distributed.sharded_index import ShardedIndex

_WHERE = {"ShardedIndex": "sharded_index", "ray_cluster": "cluster", "encode_distributed": "encode",
          "read_code_shards": "code_shards"}


def __getattr__(name: str) -> Any:
    """Import lazily: `import cmhash.runtime.distributed` stays cheap and Ray-free."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
