"""One local Ray cluster with 2 CPUs for the whole session (starting Ray takes seconds), shut down at the end.

Tests that need Ray take the `ray_session` fixture; where Ray is not installed they skip.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray")
    from cmhash.runtime.distributed.cluster import init

    started = not ray.is_initialized()
    init(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()
