"""``talkinghead batch --ray [ADDRESS]``: the batch's items on Ray actors (the ``ray`` extra).

One actor per GPU of the cluster (each with ``num_gpus=1``, so Ray pins it to its own device), or
``workers`` CPU actors where there is no GPU. Each actor is a ``batch.ItemRunner`` keeping its
model warm; Ray's ``ActorPool`` hands out the items, so there is no scheduler of our own. Without
an ADDRESS a local cluster is started for the run.
"""

from __future__ import annotations

import logging
from typing import Any

from tqdm.auto import tqdm

from talkinghead.serve.batch import BatchError, BatchItem, ItemRunner

__all__ = ["run_on_ray"]

logger = logging.getLogger(__name__)

CPU_WORKERS = 2  # CPU actors when the cluster has no GPU and no count is given


class _Actor:
    """A Ray actor around ``ItemRunner`` (the class is wrapped by ``ray.remote`` at run time)."""

    def __init__(self, device: str) -> None:
        import logging as _logging

        _logging.basicConfig(level=_logging.INFO, format="%(levelname)s: %(message)s")
        self.runner = ItemRunner(device)

    def run(self, item: BatchItem) -> dict[str, Any]:
        return self.runner(item)


def run_on_ray(
    items: list[BatchItem], address: str, workers: int | None, *, progress: bool = True
) -> list[dict[str, Any]]:
    """Run ``items`` on a Ray cluster (``address`` "local" starts one); returns their records."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as err:
        raise BatchError("--ray needs the 'ray' extra: pip install 'talkinghead[ray]'") from err
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(
                num_cpus=workers or CPU_WORKERS, include_dashboard=False, configure_logging=False
            )
        else:
            ray.init(address=address, configure_logging=False)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = workers or gpus or CPU_WORKERS
        if gpus:
            actor_class = ray.remote(num_gpus=1)(_Actor)
            actors = [actor_class.remote("cuda") for _ in range(min(count, gpus))]
        else:
            actor_class = ray.remote(num_cpus=1)(_Actor)
            actors = [actor_class.remote("cpu") for _ in range(count)]
        logger.info(
            "batch on Ray: %d actors (%s) for %d items",
            len(actors),
            "GPU" if gpus else "CPU",
            len(items),
        )
        pool = ActorPool(actors)
        results = pool.map_unordered(lambda actor, item: actor.run.remote(item), items)
        return list(
            tqdm(results, total=len(items), desc="batch (ray)", unit="item", disable=not progress)
        )
    finally:
        if started_here:
            ray.shutdown()
