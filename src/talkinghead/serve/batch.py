"""``talkinghead batch jobs.csv|jobs.jsonl -o OUT_DIR``: many generations, resumable.

Each row names ``image`` (or ``portrait``) and ``audio`` (or ``speech``), relative to the list's
folder, and optionally ``output`` (relative to OUT_DIR), ``model`` and any option of the model's
family (``seed``, ``num_steps``, ...). A row without ``output`` is written to
``<audio stem>-<hash of the row>.mp4``, so a name never depends on the row's position.

Resumable: outputs appear only complete (``outputs.save_result``), so an existing output is a
finished item and is skipped. An item's failure is recorded in ``report.jsonl`` and never stops
the run. The items run here in one process, on the ranks of ``torchrun`` (rank r takes items
r, r + W, ...; ``report.rank<r>.jsonl`` each, merged by rank 0; ranks on the CPU of one machine
each keep to their share of its cores, ``threads.configure_worker``), or on Ray actors
(``batch_ray``). The item itself runs through the server's worker code (``worker.generate``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

__all__ = ["BatchError", "BatchItem", "ItemRunner", "Summary", "read_items", "run_batch"]

logger = logging.getLogger(__name__)

REPORT = "report.jsonl"
IMAGE_KEYS = ("image", "portrait")
AUDIO_KEYS = ("audio", "speech")


class BatchError(ValueError):
    """The job list itself cannot be used (one sentence; the CLI prints it)."""


@dataclass(frozen=True)
class BatchItem:
    """One row of the list, resolved."""

    index: int  # row number, from 0
    image: str  # absolute path
    audio: str  # absolute path
    output: str  # absolute path of the mp4
    model: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)


def read_items(jobs: Path, out_dir: Path, *, model: str, steps: int | None) -> list[BatchItem]:
    """Parse a .csv (header row) or .jsonl list into items."""
    if not jobs.is_file():
        raise BatchError(f"the job list {jobs} does not exist")
    rows = _read_rows(jobs)
    items = []
    base = jobs.resolve().parent
    for index, row in enumerate(rows):
        row = {k.strip(): v for k, v in row.items() if k and v not in (None, "")}
        image = next((row.pop(k) for k in IMAGE_KEYS if k in row), None)
        audio = next((row.pop(k) for k in AUDIO_KEYS if k in row), None)
        if image is None or audio is None:
            raise BatchError(f"row {index + 1} of {jobs} needs an 'image' and an 'audio' column")
        name = row.pop("output", None)
        item_model = row.pop("model", model)
        options = {k: _value(v) for k, v in row.items()}
        if steps is not None:
            options.setdefault("num_steps", steps)
        if name is None:
            digest = hashlib.sha1(
                json.dumps([image, audio, item_model, options], sort_keys=True).encode()
            ).hexdigest()[:8]
            name = f"{Path(audio).stem}-{digest}.mp4"
        items.append(
            BatchItem(
                index,
                str(base / image),
                str(base / audio),
                str(out_dir.resolve() / name),
                item_model,
                options,
            )
        )
    outputs = [i.output for i in items]
    if len(set(outputs)) != len(outputs):
        raise BatchError(f"two rows of {jobs} write the same output; give them distinct 'output's")
    return items


def _read_rows(jobs: Path) -> list[dict[str, Any]]:
    text = jobs.read_text()
    if jobs.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise BatchError(f"line {number} of {jobs} is not JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise BatchError(f"line {number} of {jobs} is not a JSON object")
                rows.append(row)
        return rows
    if jobs.suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    raise BatchError(f"{jobs} must be a .csv or a .jsonl file")


def _value(text: Any) -> Any:
    """A CSV cell as the JSON value it spells (3, 0.5, true, null), else the string."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class ItemRunner:
    """Runs items on one device, keeping each model's pipeline warm (a worker without a queue)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._pipelines: dict[str, Any] = {}

    def __call__(self, item: BatchItem) -> dict[str, Any]:
        """Generate one item; returns its report record (never raises for a bad item)."""
        from talkinghead.outputs import save_result
        from talkinghead.serve.catalog import model_spec
        from talkinghead.serve.worker import generate, load_model

        record: dict[str, Any] = {"index": item.index, "output": item.output}
        if Path(item.output).exists():
            return {**record, "status": "skipped"}
        started = time.monotonic()
        try:
            spec = model_spec(item.model)
            options = spec.options_class(**{**spec.defaults, **item.options})
            if item.model not in self._pipelines:
                self._pipelines[item.model] = load_model(item.model, self.device)
            pipe = self._pipelines[item.model]
            Path(item.output).parent.mkdir(parents=True, exist_ok=True)
            result = generate(pipe, Path(item.image), Path(item.audio), options, _quiet)
            frames = save_result(result, item.output, audio_path=item.audio)
        except (ValueError, OSError, RuntimeError, TypeError) as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            logger.warning("item %d failed: %s", item.index, message)
            return {**record, "status": "failed", "error": message}
        return {
            **record,
            "status": "done",
            "frames": frames,
            "seed": result.seed,
            "seconds": round(time.monotonic() - started, 3),
        }


def _quiet(_stage: str, _done: int, _total: int) -> None:
    return None


def run_batch(
    jobs: Path,
    out_dir: Path,
    *,
    model: str = "demo",
    steps: int | None = None,
    device: str | None = None,
    ray_address: str | None = None,
    ray_workers: int | None = None,
    progress: bool = True,
) -> Summary:
    """Run every item of ``jobs`` not yet done; write ``OUT_DIR/report.jsonl``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    items = read_items(jobs, out_dir, model=model, steps=steps)
    if ray_address is not None:
        from talkinghead.serve.batch_ray import run_on_ray

        records = run_on_ray(items, ray_address, ray_workers, progress=progress)
        return _summarize(records, out_dir / REPORT)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = device or _default_device(local_rank)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device == "cpu" and local_world > 1:
        from talkinghead.threads import configure_worker, split_cores

        configure_worker(split_cores(local_world)[local_rank])
    runner = ItemRunner(device)
    mine = items[rank::world]
    records = [
        runner(item)
        for item in tqdm(
            mine,
            desc=f"batch (rank {rank}/{world})" if world > 1 else "batch",
            unit="item",
            disable=not progress or rank != 0,
        )
    ]
    if world == 1:
        return _summarize(records, out_dir / REPORT)
    _write_report(records, out_dir / f"report.rank{rank}.jsonl")
    return _merge_ranks(out_dir, rank, world, records)


def _default_device(local_rank: int) -> str:
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


def _merge_ranks(out_dir: Path, rank: int, world: int, records: list[dict]) -> Summary:
    """After a barrier, rank 0 merges every rank's report into report.jsonl."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        return _summarize(records, None)
    merged: list[dict[str, Any]] = []
    for r in range(world):
        part = out_dir / f"report.rank{r}.jsonl"
        merged.extend(json.loads(line) for line in part.read_text().splitlines())
        part.unlink()
    return _summarize(merged, out_dir / REPORT)


def _summarize(records: list[dict[str, Any]], report: Path | None) -> Summary:
    records = sorted(records, key=lambda r: r["index"])
    summary = Summary(records=records)
    for record in records:
        setattr(summary, record["status"], getattr(summary, record["status"]) + 1)
    if report is not None:
        _write_report(records, report)
        logger.info(
            "batch: %d done, %d skipped (already there), %d failed; report: %s",
            summary.done,
            summary.skipped,
            summary.failed,
            report,
        )
    return summary


def _write_report(records: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)
