"""Corrupt inputs are reported and skipped; the CLI's exit codes and `info`."""

from __future__ import annotations

import json

from nuscenes.nuscenes import NuScenes
from support import VERSION
from typer.testing import CliRunner

from cmcr_cli.app import app
from cmcr_core.data.prepared import PreparedDataset, prepared_summary

runner = CliRunner()


def prepare_cli(world, out, *extra: str):
    args = ["prepare", "nuscenes", "--dataroot", str(world), "--version", VERSION, "--out", str(out),
            "--superpixels", "none", "--samples-per-shard", "2", *extra]
    return runner.invoke(app, args)


def test_corrupt_inputs_are_reported_and_the_rest_goes_on(world_copy, tmp_path):
    nusc = NuScenes(VERSION, str(world_copy), verbose=False)
    first, second, third = nusc.sample[0], nusc.sample[1], nusc.sample[4]
    jpeg = world_copy / nusc.get("sample_data", first["data"]["CAM_BACK"])["filename"]
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 3])  # truncated JPEG
    lidar = nusc.get("sample_data", second["data"]["LIDAR_TOP"])
    pcd = world_copy / lidar["filename"]
    pcd.write_bytes(pcd.read_bytes()[:-7])  # not a whole number of points
    labels = world_copy / nusc.get("lidarseg", third["data"]["LIDAR_TOP"])["filename"]
    labels.write_bytes(labels.read_bytes()[:-1])  # one label short
    out = tmp_path / "out"

    result = prepare_cli(world_copy, out)
    assert result.exit_code == 1, result.output
    failures = {f["sample_token"]: f for f in json.loads((out / "index-0-of-1.json").read_text())["failures"]}
    assert set(failures) == {first["token"], second["token"], third["token"]}
    for sample, path, reason in [(first, jpeg, "cannot decode JPEG"), (second, pcd, "multiple of 20"),
                                 (third, labels, "labels for")]:
        assert failures[sample["token"]]["path"] == str(path)
        assert reason in failures[sample["token"]]["reason"]
    assert "3 failed samples" in result.output

    dataset = PreparedDataset(out, "all")  # failed samples are left out, the others are all there
    assert sorted(dataset.tokens) == sorted(s["token"] for s in nusc.sample if s["token"] not in failures)
    summary = prepared_summary(out)
    assert summary["splits"]["all"]["failed"] == 3
    assert summary["splits"]["all"]["prepared"] == len(nusc.sample) - 3

    # Re-running keeps the finished shards and still says that samples failed.
    again = prepare_cli(world_copy, out)
    assert again.exit_code == 1 and "0 shards built" in again.output


def test_missing_image_is_reported(world_copy, tmp_path):
    nusc = NuScenes(VERSION, str(world_copy), verbose=False)
    sample = nusc.sample[2]
    jpeg = world_copy / nusc.get("sample_data", sample["data"]["CAM_FRONT"])["filename"]
    jpeg.unlink()
    result = prepare_cli(world_copy, tmp_path / "out")
    assert result.exit_code == 1
    failures = json.loads((tmp_path / "out" / "index-0-of-1.json").read_text())["failures"]
    scene = nusc.get("scene", sample["scene_token"])["name"]
    assert failures == [{"sample_token": sample["token"], "scene": scene, "path": str(jpeg),
                         "reason": "missing image file"}]


def test_clean_run_exits_0_and_info_shows_the_splits(world, tmp_path):
    out = tmp_path / "out"
    result = prepare_cli(world, out)
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["prepare", "info", "--data", str(out)])
    assert info.exit_code == 0, info.output
    nusc = NuScenes(VERSION, str(world), verbose=False)
    assert f"samples {len(nusc.sample)}/{len(nusc.sample)}" in info.output
    for split in ("mini_train", "mini_val", "parametrize", "verifying"):
        assert split in info.output


def test_usage_errors_exit_2(world, tmp_path):
    for extra, message in [(["--shard", "3/2"], "--shard"), (["--shard", "x"], "i/n"),
                           (["--workers", "0"], "--workers")]:
        result = prepare_cli(world, tmp_path / "o", *extra)
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["prepare", "nuscenes", "--dataroot", str(world), "--version", "v1.0-mini",
                                 "--out", str(tmp_path / "o"), "--superpixels", "felzenszwalb"])
    assert result.exit_code == 2 and "--superpixels" in result.output
    result = runner.invoke(app, ["prepare", "nuscenes", "--dataroot", str(tmp_path), "--version", "v1.0-mini",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no nuScenes tables" in result.output
    result = runner.invoke(app, ["prepare", "info", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "no prepared index" in result.output


def test_missing_label_file_is_named(world_copy, tmp_path):
    # The devkit itself refuses to load a release whose lidarseg files and records disagree in number;
    # prepare then stops with a usage error naming the missing file.
    nusc = NuScenes(VERSION, str(world_copy), verbose=False)
    labels = world_copy / nusc.get("lidarseg", nusc.sample[3]["data"]["LIDAR_TOP"])["filename"]
    labels.unlink()
    result = prepare_cli(world_copy, tmp_path / "out")
    assert result.exit_code == 2
    assert "label files" in result.output and str(labels) in result.output.replace("\n", "")
