"""`cmcr prepare nuscenes`: nuScenes keyframes → HDF5 shards with pairings and superpixels.

Work is split into fixed shards of consecutive samples (scene.json order, then time order), so the
assignment of samples to shards depends only on the release and `samples_per_shard`. A job `--shard i/n`
owns the shards with id % n == i and writes `index-i-of-n.json`; `--workers N` builds its shards in N
spawned processes while the parent writes the index after every finished shard. Finished shards are
skipped on re-runs; a leftover `.h5.tmp` is rebuilt. Per-sample input problems become failure records.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import queue as queue_module
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcr_core.data import nuscenes_plan as nsp
from cmcr_core.data.labels import COARSE_CLASS_NAMES
from cmcr_core.data.sample_io import SampleContext, SampleFailure, process_sample
from cmcr_core.data.shards import (
    FORMAT_VERSION,
    ShardSummary,
    ShardWriter,
    read_shard_header,
    shard_file_name,
)
from cmcr_core.data.splits import scene_subsets
from cmcr_core.data.superpixels import SlicParams
from cmcr_core.ops.atomic import write_json_atomic

logger = logging.getLogger(__name__)

INDEX_FORMAT = "cmcr-prepared-nuscenes"
DEFAULT_SAMPLES_PER_SHARD = 64
# SLIC on the image downscaled by 0.5: ≥3× faster per sample, ASA within 1 point (benchmarks/prepare.py).
DEFAULT_SUPERPIXEL_SCALE = 0.5


class PrepareError(ValueError):
    """A preparation request that cannot be carried out (bad arguments, inconsistent output folder)."""


@dataclass(frozen=True)
class PrepareOptions:
    """How to prepare: superpixel method ("slic" or "none"), SLIC settings, shard size, depth threshold."""

    superpixels: str = "slic"
    slic: SlicParams = field(default_factory=lambda: SlicParams(scale=DEFAULT_SUPERPIXEL_SCALE))
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD
    min_depth: float = 1.0

    def __post_init__(self) -> None:
        if self.superpixels not in ("slic", "none"):
            raise PrepareError(f"--superpixels must be 'slic' or 'none', got {self.superpixels!r}")
        if self.samples_per_shard < 1:
            raise PrepareError(f"samples per shard must be >= 1, got {self.samples_per_shard}")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PrepareOptions:
        """The options that wrote a prepared folder (its index's `config`, the inverse of `config`)."""
        slic = config.get("superpixels")
        params = SlicParams(**{k: v for k, v in slic.items() if k != "start_label"}) if slic else SlicParams()
        return cls(superpixels="slic" if slic else "none", slic=params,
                   samples_per_shard=int(config["samples_per_shard"]), min_depth=float(config["min_depth"]))

    def config(self, version: str) -> dict[str, Any]:
        """The settings a resumed run must share with the shards already written."""
        slic = None
        if self.superpixels == "slic":
            slic = {"n_segments": self.slic.n_segments, "compactness": self.slic.compactness,
                    "sigma": self.slic.sigma, "scale": self.slic.scale, "start_label": 0}
        return {
            "format_version": FORMAT_VERSION,
            "version": version,
            "camera_names": list(nsp.CAMERA_NAMES),
            "samples_per_shard": self.samples_per_shard,
            "min_depth": self.min_depth,
            "superpixels": slic,
        }


def parse_shard_spec(text: str) -> tuple[int, int]:
    """Parse "i/n" (0 <= i < n) as used by `--shard`; raises PrepareError naming the value."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise PrepareError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise PrepareError(f"--shard {text!r}: need 0 <= i < n")
    return index, count


def index_file_name(job: tuple[int, int]) -> str:
    return f"index-{job[0]}-of-{job[1]}.json"


@dataclass
class ShardJob:
    """One shard to build: its id, planned sample tokens and the tasks for them."""

    shard_id: int
    planned_tokens: list[str]
    tasks: list[nsp.SampleTask]


@dataclass
class PreparePlan:
    """The work of one `--shard i/n` job: shards kept from earlier runs and shards still to build."""

    out: Path
    job: tuple[int, int]
    index: dict[str, Any]  # index fields shared by every job (everything but "shards"/"failures")
    context: SampleContext
    done: dict[int, ShardSummary]
    todo: list[ShardJob]

    @property
    def samples_todo(self) -> int:
        return sum(len(job.tasks) for job in self.todo)

    @property
    def index_path(self) -> Path:
        return self.out / index_file_name(self.job)


@dataclass
class PrepareReport:
    """Outcome of a job: shards built now / kept, samples written, failures in this job's shards."""

    index_path: Path
    shards_built: int
    shards_kept: int
    samples_written: int
    failures: list[dict[str, str]]


def plan_prepare(
    dataroot: str | Path,
    version: str,
    out: str | Path,
    options: PrepareOptions = PrepareOptions(),
    job: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
    rebuild: frozenset[int] = frozenset(),
) -> PreparePlan:
    """Read the release with the devkit, assign samples to shards and find what is left to do.

    `rebuild`: ids of shards to build again even though their file exists (`cmcr prepare verify
    --retry-failed` found them damaged); the new file replaces the old one atomically when it is done.

    Raises:
        PrepareError: missing tables, or `out` holds shards/indexes made with other settings.
    """
    out = Path(out)
    try:
        nusc = nsp.load_nuscenes(dataroot, version)
    except (ValueError, AssertionError) as exc:
        raise PrepareError(str(exc)) from exc
    config = options.config(version)
    _check_existing_indexes(out, config)
    scenes = [(scene["name"], nsp.scene_sample_tokens(nusc, scene)) for scene in nusc.scene]
    ordered = [(token, name) for name, tokens in scenes for token in tokens]
    size = options.samples_per_shard
    num_shards = (len(ordered) + size - 1) // size
    with_labels = nsp.has_lidarseg(nusc)
    lut = nsp.fine_to_coarse_table(nusc) if with_labels else None
    index = {
        "format": INDEX_FORMAT,
        "format_version": FORMAT_VERSION,
        "dataroot": str(Path(dataroot).resolve()),
        "version": version,
        "config": config,
        "camera_names": list(nsp.CAMERA_NAMES),
        "has_labels": with_labels,
        "labels": None if lut is None else {
            "fine_names": nsp.fine_class_names(nusc),
            "coarse_names": list(COARSE_CLASS_NAMES),
            "fine_to_coarse": lut.tolist(),
        },
        "num_samples": len(ordered),
        "num_shards": num_shards,
        "scenes": [{"name": name, "num_samples": len(tokens)} for name, tokens in scenes],
        "splits": scene_subsets([name for name, _ in scenes], version),
    }
    context = SampleContext(
        camera_names=nsp.CAMERA_NAMES, fine_to_coarse=lut,
        slic=options.slic if options.superpixels == "slic" else None, min_depth=options.min_depth,
    )
    done: dict[int, ShardSummary] = {}
    todo: list[ShardJob] = []
    for shard_id in range(job[0], num_shards, job[1]):
        members = ordered[shard_id * size:(shard_id + 1) * size]
        planned = [token for token, _ in members]
        kept = None if shard_id in rebuild else _existing_shard(out, shard_id, config, planned)
        if kept is not None and not (retry_failed and kept.failures):
            done[shard_id] = kept
            continue
        tasks = [nsp.build_sample_task(nusc, token, name, with_labels) for token, name in members]
        todo.append(ShardJob(shard_id, planned, tasks))
    return PreparePlan(out=out, job=job, index=index, context=context, done=done, todo=todo)


def _check_existing_indexes(out: Path, config: dict[str, Any]) -> None:
    for part in sorted(out.glob("index-*-of-*.json")):
        existing = json.loads(part.read_text()).get("config")
        if existing != config:
            raise PrepareError(
                f"{part} was written with other settings ({_config_diff(existing, config)}); "
                "prepare into a new --out folder or remove the old one"
            )


def _config_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    old = old or {}
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def _existing_shard(
    out: Path, shard_id: int, config: dict[str, Any], planned: list[str]
) -> ShardSummary | None:
    path = out / shard_file_name(shard_id)
    if not path.exists():
        return None
    try:
        header = read_shard_header(out, shard_id)
    except ValueError as exc:
        raise PrepareError(f"{exc}; delete it to rebuild that shard") from exc
    if header.config != config or header.planned_tokens != planned:
        raise PrepareError(
            f"{path} belongs to a different preparation "
            f"({_config_diff(header.config, config) or 'other samples'}); "
            "prepare into a new --out folder"
        )
    return header.summary


def build_shard(job: ShardJob, out: Path, context: SampleContext, config: dict[str, Any],
                on_sample: Callable[[int], None] | None = None) -> ShardSummary:
    """Prepare every sample of one shard into `<shard>.h5.tmp`, then commit it atomically.

    Args:
        job: the shard and its tasks.
        out: prepared folder.
        context: per-sample settings (cameras, label table, SLIC).
        config: the preparation settings stored in the shard (a resumed run must match them).
        on_sample: called with 1 after each processed sample (failed ones included).
    """
    writer = ShardWriter(
        out, job.shard_id, config, job.planned_tokens, context.camera_names,
        with_labels=context.fine_to_coarse is not None, with_superpixels=context.slic is not None,
    )
    try:
        for task in job.tasks:
            try:
                writer.add(process_sample(task, context))
            except SampleFailure as failure:
                logger.warning("sample %s skipped: %s: %s", task.sample_token, failure.path, failure.reason)
                writer.add_failure({"sample_token": task.sample_token, "scene": task.scene,
                                    "path": failure.path, "reason": failure.reason})
            if on_sample is not None:
                on_sample(1)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


_PROGRESS_QUEUE: Any = None


def _init_worker(progress_queue: Any) -> None:
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = progress_queue


def _worker_build_shard(
    job: ShardJob, out: str, context: SampleContext, config: dict[str, Any]
) -> ShardSummary:
    return build_shard(job, Path(out), context, config, on_sample=_PROGRESS_QUEUE.put)


def run_prepare(plan: PreparePlan, workers: int = 1,
                progress: Callable[[int], None] | None = None) -> PrepareReport:
    """Build the plan's remaining shards with `workers` processes; the index is rewritten after each one.

    Args:
        plan: from `plan_prepare`.
        workers: number of processes (1 = in this process).
        progress: called with the number of newly processed samples.

    Returns:
        The report; `report.failures` lists every failed sample of this job's shards (kept ones too).
    """
    if workers < 1:
        raise PrepareError(f"--workers must be >= 1, got {workers}")
    plan.out.mkdir(parents=True, exist_ok=True)
    kept = len(plan.done)
    _write_index(plan)
    built: list[ShardSummary] = []

    def finished(summary: ShardSummary) -> None:
        plan.done[summary.shard_id] = summary
        built.append(summary)
        _write_index(plan)

    if workers == 1 or len(plan.todo) <= 1:
        for job in plan.todo:
            finished(build_shard(job, plan.out, plan.context, plan.index["config"], on_sample=progress))
    else:
        _run_pool(plan, workers, progress, finished)
    failures = [f for shard_id in sorted(plan.done) for f in plan.done[shard_id].failures]
    written = sum(len(s.sample_tokens) for s in built)
    return PrepareReport(plan.index_path, len(built), kept, written, failures)


def _run_pool(plan: PreparePlan, workers: int, progress: Callable[[int], None] | None,
              finished: Callable[[ShardSummary], None]) -> None:
    # spawn: no h5py/HDF5 state or devkit tables are inherited through fork.
    spawn = mp.get_context("spawn")
    progress_queue = spawn.Queue()
    results: queue_module.Queue = queue_module.Queue()
    with spawn.Pool(min(workers, len(plan.todo)), initializer=_init_worker,
                    initargs=(progress_queue,)) as pool:
        for job in plan.todo:
            pool.apply_async(_worker_build_shard, (job, str(plan.out), plan.context, plan.index["config"]),
                             callback=results.put, error_callback=results.put)
        remaining = len(plan.todo)
        while remaining:
            _drain(progress_queue, progress, timeout=0.1)
            while True:
                try:
                    item = results.get_nowait()
                except queue_module.Empty:
                    break
                remaining -= 1
                if isinstance(item, BaseException):
                    pool.terminate()
                    raise item
                finished(item)
        _drain(progress_queue, progress, timeout=0.0)


def _drain(progress_queue: Any, progress: Callable[[int], None] | None, timeout: float) -> None:
    try:
        count = progress_queue.get(timeout=timeout) if timeout else progress_queue.get_nowait()
        while True:
            if progress is not None:
                progress(count)
            count = progress_queue.get_nowait()
    except queue_module.Empty:
        return


def _write_index(plan: PreparePlan) -> None:
    shards = [plan.done[shard_id].to_json() for shard_id in sorted(plan.done)]
    payload = dict(plan.index)
    mine = range(plan.job[0], plan.index["num_shards"], plan.job[1])
    payload["job"] = {"index": plan.job[0], "count": plan.job[1], "shards_planned": len(mine),
                      "complete": len(shards) == len(mine)}
    payload["shards"] = shards
    payload["failures"] = [f for shard in shards for f in shard["failures"]]
    write_json_atomic(plan.index_path, payload)


def prepare_nuscenes(
    dataroot: str | Path,
    version: str,
    out: str | Path,
    options: PrepareOptions = PrepareOptions(),
    job: tuple[int, int] = (0, 1),
    workers: int = 1,
    retry_failed: bool = False,
    progress: Callable[[int], None] | None = None,
) -> PrepareReport:
    """Plan and run in one call (see `plan_prepare` and `run_prepare`)."""
    plan = plan_prepare(dataroot, version, out, options, job=job, retry_failed=retry_failed)
    return run_prepare(plan, workers=workers, progress=progress)


__all__ = [
    "DEFAULT_SUPERPIXEL_SCALE", "PrepareError", "PrepareOptions", "PreparePlan", "PrepareReport",
    "build_shard", "parse_shard_spec", "plan_prepare", "prepare_nuscenes", "run_prepare",
]
