"""`cmcr prepare ...`: synthetic worlds and objects, nuScenes and SemanticKITTI shards, ReCon teacher targets.

The readers and writers are in ``cmcr_core.data``; here are the workflows the commands run: option checks,
the stand-in teacher and its device, and what each step reports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmcr_core.data import prepare_nuscenes as prep
from cmcr_core.data.integrity import VerifyReport
from cmcr_core.data.objects import write_synthetic_object_datasets
from cmcr_core.data.objects.synthetic import CLASS_SETS
from cmcr_core.data.semantickitti import prepare_semantickitti
from cmcr_core.data.semantickitti.writer import write_semantickitti_world
from cmcr_core.data.superpixels import SlicParams
from cmcr_core.data.synthetic import WorldSummary, write_nuscenes_world
from cmcr_core.ops.progress import progress_bar
from cmcr_core.runs.object_teachers import write_teacher_targets
from cmcr_core.runs.report import Line, Report, Table
from cmcr_core.runs.run_folder import claim_output

__all__ = [
    "NUSCENES_VERSIONS",
    "plan_nuscenes",
    "prepare_kitti",
    "prepare_object_targets",
    "verify_data",
    "write_synthetic_kitti",
    "write_synthetic_objects",
    "write_synthetic_world",
]

NUSCENES_VERSIONS = ("v1.0-trainval", "v1.0-mini", "v1.0-test")
TARGETS_FILE = "teacher_targets.npz"


@dataclass(frozen=True)
class SyntheticWorldRun:
    """A written synthetic world and how long it took."""

    summary: WorldSummary
    seconds: float

    def report(self) -> Report:
        s, points = self.summary, self.summary.points_per_sweep
        return Report((Line(
            f"wrote {len(s.scene_names)} scenes ({', '.join(s.scene_names)}), {s.samples} samples in "
            f"{self.seconds:.1f} s\n"
            f"  LiDAR points per sweep: mean {sum(points) / len(points):.0f}, "
            f"min {min(points)}, max {max(points)}\n"
            f"  images {s.image_size[0]}x{s.image_size[1]}, 6 cameras; "
            f"{s.bytes_written / s.samples / 1e6:.2f} MB per sample\n"
            f"  nuScenes dataroot: {s.root} (version {s.version})\n"
            f"  camera truth maps: {s.truth_index.parent} (index {s.truth_index.name})"),))


def write_synthetic_world(out: str | Path, scenes: int, samples_per_scene: int, seed: int,
                          image_size: tuple[int, int], overwrite: bool = False, workers: int = 1,
                          progress: Callable[[int, int], None] | None = None) -> SyntheticWorldRun:
    """`cmcr prepare synthetic`: a procedural world in the nuScenes v1.0-mini layout, timed."""
    start = time.perf_counter()
    summary = write_nuscenes_world(out, scenes=scenes, samples_per_scene=samples_per_scene, seed=seed,
                                   image_size=image_size, overwrite=overwrite, workers=workers,
                                   progress=progress)
    return SyntheticWorldRun(summary, time.perf_counter() - start)


def plan_nuscenes(dataroot: str | Path, version: str, out: str | Path, workers: int = 1, shard: str = "0/1",
                  superpixels: str = "slic", superpixel_scale: float | None = None,
                  samples_per_shard: int = prep.DEFAULT_SAMPLES_PER_SHARD, retry_failed: bool = False,
                  overwrite: bool = False) -> prep.PreparePlan:
    """`cmcr prepare nuscenes`: check the options and plan this job's shards (``prep.run_prepare`` builds
    them). An existing prepared folder resumes; ``overwrite`` deletes it and starts again (not with several
    --shard jobs, which share it). Raises ValueError naming the option at fault."""
    if overwrite and shard != "0/1":
        raise ValueError("--overwrite deletes the whole prepared folder, which the other --shard jobs share: "
                         "remove the folder once before launching them instead")
    if version not in NUSCENES_VERSIONS:
        raise ValueError(f"--version must be one of {', '.join(NUSCENES_VERSIONS)}, got {version!r}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    job = prep.parse_shard_spec(shard)
    scale = prep.DEFAULT_SUPERPIXEL_SCALE if superpixel_scale is None else superpixel_scale
    options = prep.PrepareOptions(superpixels=superpixels, slic=SlicParams(scale=scale),
                                  samples_per_shard=samples_per_shard)
    if overwrite:  # without it an existing prepared folder resumes
        claim_output(out, overwrite=True)
    return prep.plan_prepare(dataroot, version, out, options, job=job, retry_failed=retry_failed)


def write_synthetic_kitti(root: str | Path, sequences: Sequence[str], scans_per_sequence: int = 20,
                          seed: int = 0, overwrite: bool = False) -> Report:
    """`cmcr prepare semantickitti --synthetic`: the synthetic world in the SemanticKITTI layout in `root`."""
    world = write_semantickitti_world(root, list(sequences), scans_per_sequence, seed, overwrite=overwrite)
    points = world.points_per_scan
    return Report((Line(f"wrote synthetic sequences {', '.join(world.sequences)} "
                        f"({world.scans_per_sequence} scans each, {sum(points) / len(points):.0f} points per "
                        f"scan) to {root}/sequences"),))


def prepare_kitti(root: str | Path, out: str | Path, overwrite: bool = False) -> Report:
    """`cmcr prepare semantickitti`: per-sequence HDF5 shards of the scans under `root` (an existing
    prepared folder resumes; ``overwrite`` deletes it and starts again)."""
    if overwrite:  # without it an existing prepared folder resumes
        claim_output(out, overwrite=True)
    report = prepare_semantickitti(root, out)
    return Report((Line(f"sequences prepared: {', '.join(report.written) or 'none'}; kept from an earlier "
                        f"run: {', '.join(report.kept) or 'none'}; index: {report.index_path}"),))


def write_synthetic_objects(out: str | Path, train_per_class: int, test_per_class: int, points: int,
                            seed: int, render_size: int, classes: str = "basic", pretrain_per_class: int = 0,
                            scans: bool = False, overwrite: bool = False) -> tuple[dict[str, Any], Report]:
    """`cmcr prepare objects --synthetic`: objects in every layout under `out` (a folder, not a .npz;
    objects already there are replaced only with ``overwrite``); `classes` names a class set of
    ``cmcr_core.data.objects.synthetic.CLASS_SETS``; `pretrain_per_class` and `scans` as
    ``write_synthetic_object_datasets``."""
    if Path(out).suffix == ".npz":
        raise ValueError(f"--synthetic writes a folder; --out {out} looks like a targets file")
    if classes not in CLASS_SETS:
        raise ValueError(f"--classes must be one of {', '.join(CLASS_SETS)}, got {classes!r}")
    claim_output(out, overwrite)
    try:
        layout = write_synthetic_object_datasets(out, train_per_class, test_per_class, points, seed,
                                                 image_size=render_size, classes=CLASS_SETS[classes],
                                                 pretrain_per_class=pretrain_per_class, scans=scans)
    except OSError as exc:
        raise ValueError(str(exc)) from exc
    written = ", ".join(f"{k} {v}" for k, v in layout.items())
    return layout, Report((Line(f"wrote synthetic objects: {written}"),))


def prepare_object_targets(root: str | Path, out: str | Path, overwrite: bool = False,
                           **options: Any) -> Report:
    """`cmcr prepare objects`: ReCon teacher targets for the ShapeNet-55 objects under `root`, written to
    `out` (a .npz, or `out/teacher_targets.npz`; an existing targets file is replaced only with
    ``overwrite``); ``cmcr_core.runs.object_teachers.write_teacher_targets`` names the options (image
    teacher, text source, views, sizes, seed, device)."""
    target = Path(out) if Path(out).suffix == ".npz" else Path(out) / TARGETS_FILE
    claim_output(target, overwrite)
    return write_teacher_targets(root, target, **options)


@dataclass(frozen=True)
class VerifyRun:
    """`cmcr prepare verify`: what was found, and (with --retry-failed) what is left after the rebuild."""

    found: VerifyReport
    after: VerifyReport | None = None

    @property
    def damaged(self) -> bool:
        """Whether damage remains (the command exits 1)."""
        return bool((self.after or self.found).damage)

    def report(self, limit: int = 20) -> Report:
        found, blocks = self.found, []
        if found.damage:
            shown = f" (first {limit})" if len(found.damage) > limit else ""
            rows = tuple((d.file, d.token or "(whole file)", d.dataset, d.reason)
                         for d in found.damage[:limit])
            blocks.append(Table(f"{len(found.damage)} damaged arrays{shown}",
                                ("file", "sample", "dataset", "reason"), rows))
        blocks.append(Line(f"{found.root} ({found.dataset}): {found.files} files, {found.samples} samples "
                           f"checked; {found.damaged_samples} damaged samples in {len(found.to_rebuild)} "
                           "files", highlight=False))
        if found.to_rebuild and self.after is None:
            blocks.append(Line("to rebuild: " + ", ".join(found.to_rebuild) + "; `cmcr prepare verify --data "
                               f"{found.root} --retry-failed` rebuilds them from the raw dataset",
                               highlight=False))
        if found.unchecked:
            blocks.append(Line(f"{len(found.unchecked)} files carry no checksums (prepared before shards had "
                               "them; silent damage in them cannot be seen): " + ", ".join(found.unchecked)
                               + "; prepare the folder again to add them", highlight=False))
        if self.after is not None:
            after = self.after
            state = (f"{after.damaged_samples} damaged samples remain in " + ", ".join(after.to_rebuild)
                     if after.damage else "verified again: no damage left")
            blocks.append(Line(f"rebuilt {', '.join(self.after.rebuilt)}; {state}", highlight=False))
        return Report(tuple(blocks))


def verify_data(data: str | Path, retry_failed: bool = False, dataroot: str | Path | None = None,
                workers: int = 1) -> VerifyRun:
    """`cmcr prepare verify`: check every sample of a prepared folder against its checksums; with
    `retry_failed`, rebuild the damaged files from the raw dataset (`dataroot`, default: the one the index
    records) and check again."""
    from cmcr_core.data.verify import verify_prepared

    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    found = verify_prepared(data)
    if not retry_failed or not found.to_rebuild:
        return VerifyRun(found)
    if found.dataset == "semantickitti":
        _rebuild_kitti(Path(data), found.to_rebuild, dataroot)
    else:
        _rebuild_nuscenes(Path(data), found.to_rebuild, dataroot, workers)
    after = verify_prepared(data)
    after.rebuilt = list(found.to_rebuild)
    return VerifyRun(found, after)


def _rebuild_nuscenes(root: Path, files: Sequence[str], dataroot: str | Path | None, workers: int) -> None:
    from cmcr_core.data.prepared import load_prepared_index

    index = load_prepared_index(root, check_files=False)
    ids = {shard["file"]: shard_id for shard_id, shard in index.shards.items()}
    damaged = {ids[file] for file in files}
    options = prep.PrepareOptions.from_config(index.header["config"])
    raw = dataroot or index.header["dataroot"]
    for job in index.jobs:
        mine = frozenset(i for i in damaged if i % job["count"] == job["index"])
        if not mine:
            continue
        plan = prep.plan_prepare(raw, index.header["version"], root, options, (job["index"], job["count"]),
                                 rebuild=mine)
        with progress_bar(plan.samples_todo, f"rebuild {len(mine)} shard(s)", "samples") as bar:
            prep.run_prepare(plan, workers=workers, progress=bar.advance)


def _rebuild_kitti(root: Path, files: Sequence[str], dataroot: str | Path | None) -> None:
    from cmcr_core.data.semantickitti.prepared import INDEX_NAME

    index = json.loads((root / INDEX_NAME).read_text(encoding="utf-8"))
    names = [s["name"] for s in index["sequences"] if s["file"] in set(files)]
    prepare_semantickitti(dataroot or index["root"], root, rebuild=names)
