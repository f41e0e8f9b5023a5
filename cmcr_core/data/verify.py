"""`cmcr prepare verify`: read every array of every sample of a prepared folder against its checksums.

A nuScenes folder (`index-*-of-*.json` + `shards/`) or a SemanticKITTI one (`index-semantickitti.json` +
`sequences/`). Each file is opened, each sample's arrays are read in full (`PreparedSample.damage`,
`KittiScan.damage`: HDF5 verifies each chunk's Fletcher-32 checksum and each metadata block's checksum on
the way) and the sample's token is compared with the index. What fails becomes a `Damage`; the report
lists the files to rebuild. Files written before checksums existed are listed as unchecked: they are read
all the same (a failure to read is still found), but silent damage in them cannot be seen.
"""

from __future__ import annotations

import json
from pathlib import Path

from cmcr_core.data.integrity import Damage, ShardDamage, VerifyReport
from cmcr_core.data.semantickitti.prepared import INDEX_NAME as KITTI_INDEX
from cmcr_core.data.shards import CHECKSUMS, read_text_attribute
from cmcr_core.ops.progress import progress_bar

__all__ = ["verify_prepared"]


def verify_prepared(path: str | Path) -> VerifyReport:
    """Check every sample of the prepared folder `path` (nuScenes or SemanticKITTI; a progress bar counts
    the samples). Raises PreparedDataError / KittiDataError when the folder holds no readable index."""
    root = Path(path)
    if (root / KITTI_INDEX).is_file():
        return _verify_kitti(root)
    return _verify_nuscenes(root)


def _verify_nuscenes(root: Path) -> VerifyReport:
    from cmcr_core.data.prepared import PreparedSample, _OpenShard, load_prepared_index

    index = load_prepared_index(root, check_files=False)
    report = VerifyReport(root, "nuscenes")
    bar = progress_bar(index.num_prepared, "verify", "samples")
    for shard_id in sorted(index.shards):
        entry = index.shards[shard_id]
        file, tokens = entry["file"], list(entry["sample_tokens"])
        report.files += 1
        report.samples += len(tokens)
        try:
            shard = _OpenShard(root / file)
        except ShardDamage as damage:
            if damage.dataset == "(file)":  # missing or unopenable: the whole file, no sample to name
                reason = damage.reason if (root / file).is_file() else "missing"
                report.damage.append(Damage(file, "", damage.dataset, reason))
            else:  # a shard-wide table (offsets) that every sample of the shard needs
                report.damage += [Damage(file, token, damage.dataset, damage.reason) for token in tokens]
            bar.advance(len(tokens))
            continue
        try:
            if not shard.checksums:
                report.unchecked.append(file)
            for row, token in enumerate(tokens):
                report.damage += [Damage(file, token, name, reason)
                                  for name, reason in PreparedSample.damage_of(shard, row, token)]
                bar.advance()
        finally:
            shard.file.close()
    bar.close()
    return report


def _verify_kitti(root: Path) -> VerifyReport:
    import h5py

    from cmcr_core.data.semantickitti.prepared import KittiScan

    index = json.loads((root / KITTI_INDEX).read_text(encoding="utf-8"))
    report = VerifyReport(root, "semantickitti")
    bar = progress_bar(sum(len(s["scans"]) for s in index["sequences"]), "verify", "scans")
    for sequence in index["sequences"]:
        file, scans = sequence["file"], list(sequence["scans"])
        report.files += 1
        report.samples += len(scans)
        try:
            handle = h5py.File(root / file, "r")
        except OSError as error:
            reason = str(error) if (root / file).is_file() else "missing"
            report.damage.append(Damage(file, "", "(file)", reason))
            bar.advance(len(scans))
            continue
        with handle:
            if read_text_attribute(handle.attrs, "checksums") != CHECKSUMS:
                report.unchecked.append(file)
            for row, scan in enumerate(scans):
                item = KittiScan(handle, row, sequence["name"], scan, root / file)
                report.damage += [Damage(file, item.token, name, reason) for name, reason in item.damage()]
                bar.advance()
    bar.close()
    return report
