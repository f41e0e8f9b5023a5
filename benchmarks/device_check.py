"""Driver of benchmarks/device_check.sh: one prepared check of a GPU machine that prints ONE JSON line.

    benchmarks/device_check.sh [--device cuda|cpu] [--profile DIR] [--work DIR] [--keep] [--stages a,b]

Stages, each in its own subprocess with a timeout cut to what is left of the budget (`--budget`, default
470 s on CUDA), a failure reported under "stages" without losing the other stages' figures:

* env: torch, CUDA and the device;
* sparse_float32, sparse_bfloat16: MinkUNet34C (full size on CUDA) forward and training step on a batch
  of 8 synthetic 32-beam scans, peak memory, useful FLOP rate over the dense GEMM rate of that dtype
  (device_check_workers.sparse_step);
* world, prepare: `cmcr prepare synthetic` (1600x900 images on CUDA) and `cmcr prepare nuscenes`;
* pretrain_ppkt, pretrain_cmcr: `cmcr pretrain` of recipes/ppkt_nuscenes.yaml and recipes/nuscenes.yaml
  (ResNet-50 teacher with random weights) for 20 steps; the median step time after the warm-up steps
  gives samples/s and the GPU-hours of one nuScenes epoch (28,130 keyframes at that per-GPU rate);
* profile (with --profile DIR): a CMCR pretraining under torch.profiler; trace, op table, and the time
  per step split into kernel maps, gathers/scatters, GEMMs, teacher, CMCR extras, ...;
* tests: `CMCR_TEST_DEVICE=<device> python -m pytest` over the device-aware tests, counts from JUnit XML:
  with `--tests quick` (default) those that need no prepared world (the engine, the device suite, losses,
  networks, the loop, point operations, confusions, zero-shot, CMCR's gradient flow: ~250 tests, half a
  minute on a CPU); with `--tests all` every one (`-m "gpu and not slow" tests`, minutes: pretraining,
  fine-tuning and teacher runs), within what is left of the budget.

`--device cpu` runs every stage at tiny sizes (one scan, a narrow network, a 2-keyframe world, 2 steps) so
that CI keeps the script working. Exit code 0 when every stage passed. Every command line of the project's
CLI is built in the COMMANDS section below (option names in one place).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NUSCENES_KEYFRAMES = 28130  # v1.0-trainval keyframes with LiDAR, one epoch of pretraining
PLANES_34C, LAYERS_34C = [32, 64, 128, 256, 256, 128, 96, 96], [2, 3, 4, 6, 2, 2, 2, 2]
TINY_STUDENT = ["student.planes=[16,16,32,32,32,32,16,16]", "student.layers=[1,1,1,1,1,1,1,1]",
                "student.init_dim=16"]

# The device-aware tests that need no prepared synthetic world (`--tests quick`).
QUICK_TESTS = ["tests/sparse", "tests/device", "tests/losses", "tests/models", "tests/engine", "tests/ops",
               "tests/eval/test_segmentation.py", "tests/eval/test_zeroshot_core.py",
               "tests/methods/cmcr/test_gradient_flow.py", "tests/methods/cmcr/test_contrast_images.py",
               "tests/methods/cmcr/test_mim_point_codes.py", "tests/methods/test_recon.py"]
TEST_SELECTIONS = {"quick": ["-m", "gpu and not slow", *QUICK_TESTS],
                   "all": ["-m", "gpu and not slow", "tests"]}

SIZES: dict[str, dict[str, Any]] = {
    "cuda": {
        "budget_s": 470, "batch": 8, "azimuths": 1084, "planes": PLANES_34C, "layers": LAYERS_34C,
        "init_dim": 32, "repeats": 5, "scenes": 10, "samples_per_scene": 8, "image_size": "1600x900",
        "workers": 8, "steps": 20, "warmup_steps": 5, "profile_steps": (2, 1, 3), "overrides": [],
        "tests": None, "env": {},  # None: the selection of --tests
    },
    "cpu": {
        "budget_s": 170, "batch": 1, "azimuths": 256, "planes": [16, 16, 32, 32, 32, 32, 16, 16],
        "layers": [1] * 8, "init_dim": 16, "repeats": 1, "scenes": 1, "samples_per_scene": 2,
        "image_size": "320x180", "workers": 1, "steps": 2, "warmup_steps": 1, "profile_steps": (1, 0, 1),
        "overrides": [*TINY_STUDENT, "data.crop_size=[112,208]", "data.min_pairs=64", "data.batch_size=1",
                      "data.num_workers=0", "loss.num_matches=256", "loss.mim_images=1",
                      "loss.occupancy_queries=64"],
        "tests": ["-m", "not slow", "tests/sparse/test_kernel_map.py"],
        # One thread: on a 2-core machine shared with other jobs, 2 OpenMP threads made a step ~20x slower.
        "env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CMCR_TEST_THREADS": "1"},
    },
}
RECIPES = {"ppkt": "recipes/ppkt_nuscenes.yaml", "cmcr": "recipes/nuscenes.yaml"}
STAGES = ("env", "sparse_float32", "sparse_bfloat16", "world", "prepare", "pretrain_ppkt", "pretrain_cmcr",
          "profile", "tests")
CAPS = {"env": 90, "sparse_float32": 150, "sparse_bfloat16": 150, "world": 150, "prepare": 150,
        "pretrain_ppkt": 180, "pretrain_cmcr": 200, "profile": 180, "tests": 240}
RESERVE_S, MIN_STAGE_S = 5.0, 15.0
RECURSION_GUARD = "CMCR_DEVICE_CHECK"  # set for the pytest stage: tests that run this script skip


# ------------------------------------------------------------------------------------------- COMMANDS
def cmd_prepare_synthetic(out: Path, size: dict) -> list[str]:
    return [sys.executable, "-m", "cmcr_cli", "prepare", "synthetic", "--out", str(out), "--scenes",
            str(size["scenes"]), "--samples-per-scene", str(size["samples_per_scene"]), "--image-size",
            size["image_size"], "--seed", "0", "--workers", str(size["workers"])]


def cmd_prepare_nuscenes(world: Path, out: Path, size: dict) -> list[str]:
    # No superpixels: neither PPKT (superpixel_nce 0) nor CMCR uses them.
    return [sys.executable, "-m", "cmcr_cli", "prepare", "nuscenes", "--dataroot", str(world), "--version",
            "v1.0-mini", "--out", str(out), "--superpixels", "none", "--workers", str(size["workers"])]


def pretrain_args(recipe: str, prepared: Path, out: Path, device: str, steps: int, size: dict) -> list[str]:
    """Arguments of `cmcr pretrain` (after the program name): the published recipe, random-weight teacher,
    every keyframe of the synthetic world, `steps` steps, one metrics record per step."""
    sets = ["teacher.weights=", "data.split=all", f"train.max_steps={steps}", "train.log_every=1",
            "train.checkpoint_every=0", f"train.device={device}", *size["overrides"]]
    args = ["pretrain", "--recipe", str(ROOT / recipe), "--data", str(prepared), "--out", str(out)]
    for item in sets:
        args += ["--set", item]
    return args


def cmd_pytest(junit: Path, selection: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *selection]


def cmd_worker(name: str, device: str, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--device", device, *extra]


# --------------------------------------------------------------------------------------------- stages
class StageError(RuntimeError):
    pass


def run_command(command: list[str], timeout: float, log: Path, env: dict | None = None) -> str:
    """Run `command` (its whole process group killed at `timeout`), output to `log`; returns stdout+err."""
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise StageError(f"timed out after {timeout:.0f} s; log tail: {_tail(log)}") from None
    if code != 0:
        raise StageError(f"exit code {code}; log tail: {_tail(log)}")
    return log.read_text(errors="replace")


def _tail(log: Path, chars: int = 1500) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def last_json(output: str) -> dict:
    lines = [line for line in output.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise StageError(f"no JSON line in the output: {output[-800:]}")
    return json.loads(lines[-1])


def junit_counts(path: Path) -> dict[str, Any]:
    """passed/failed/errors/skipped/total and the failing test ids of a pytest JUnit XML report."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites)
              for key in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"passed": passed, "failed": counts["failures"], "errors": counts["errors"],
            "skipped": counts["skipped"], "total": counts["tests"], "failed_ids": failed[:20]}


def pretrain_figures(run_dir: Path, warmup: int) -> dict[str, Any]:
    """Step time, samples/s and projected GPU-hours per nuScenes epoch from a run folder's metrics."""
    import yaml

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    times = [0.0] + [float(r["time"]) for r in records]
    durations = [b - a for a, b in zip(times, times[1:], strict=False)]
    measured = durations[warmup:] or durations
    step_s = statistics.median(measured)
    batch = int(recipe["data"]["batch_size"])
    samples_per_s = batch / step_s
    cuda = recipe["train"].get("device") == "cuda"
    return {"steps": len(records), "warmup_steps": min(warmup, len(records) - 1), "batch_size": batch,
            "precision": "bf16" if cuda and recipe["train"].get("amp") else "fp32",
            "s_per_step": step_s, "s_per_step_mean": statistics.fmean(measured),
            "step_s": [round(d, 3) for d in durations], "samples_per_s": samples_per_s,
            "gpu_hours_per_epoch": NUSCENES_KEYFRAMES / samples_per_s / 3600,
            "final_loss": records[-1]["total"],
            "losses_finite": all(math.isfinite(float(r["total"])) for r in records)}


class Check:
    """Runs the stages within the budget and collects the JSON."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.size = args, SIZES[args.device]
        self.deadline = time.monotonic() + (args.budget or self.size["budget_s"])
        self.result: dict[str, Any] = {"device": args.device, "stages": {}}
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="device_check_"))
        self.work.mkdir(parents=True, exist_ok=True)

    def stage(self, name: str, fn: Callable[[float], Any], needs: tuple[str, ...] = ()) -> Any:
        record: dict[str, Any] = {"ok": False}
        self.result["stages"][name] = record
        # A stage left out with --stages counts as done (a rerun on a kept --work folder reuses its output).
        broken = [n for n in needs if not self.result["stages"].get(n, {}).get("ok")
                  and self.result["stages"].get(n, {}).get("skipped") != "not selected"]
        remaining = self.deadline - time.monotonic() - RESERVE_S
        if name not in self.args.stages:
            record["skipped"] = "not selected"
        elif broken:
            record["skipped"] = f"needs {', '.join(broken)}"
        elif remaining < MIN_STAGE_S:
            record["skipped"] = "no time left in the budget"
        if "skipped" in record:
            sys.stderr.write(f"[device_check] {name}: skipped ({record['skipped']})\n")
            return None
        start, value = time.monotonic(), None
        try:
            cap = CAPS[name] if not (name == "tests" and self.args.tests == "all") else remaining
            value = fn(min(cap, remaining))
            record["ok"] = True
        except Exception as error:  # a failing stage must not lose the others' figures
            record["error"] = f"{type(error).__name__}: {error}"[-2000:]
        record["seconds"] = round(time.monotonic() - start, 1)
        status = "ok" if record["ok"] else "FAILED"
        sys.stderr.write(f"[device_check] {name}: {status} ({record['seconds']} s)\n")
        return value

    def worker(self, name: str, timeout: float, log: str, *extra: str) -> dict:
        return last_json(run_command(cmd_worker(name, self.args.device, *extra), timeout, self.work / log))

    def run(self) -> int:
        device, size, work = self.args.device, self.size, self.work
        env = self.stage("env", lambda t: self.worker("env", t, "env.log"))
        if env is not None:
            self.result["env"] = env
            if device == "cuda" and not env.get("cuda_available"):
                self.result["stages"]["env"].update(ok=False, error="CUDA requested but not available")
        needs_env = ("env",)
        for dtype in ("float32", "bfloat16"):
            figures = self.stage(f"sparse_{dtype}", lambda t, d=dtype: self.worker(
                "sparse", t, f"sparse_{d}.log", "--dtype", d), needs_env)
            if figures is not None:
                self.result.setdefault("sparse", {})[dtype] = figures
        world, prepared = work / "world", work / "prepared"
        self.stage("world", lambda t: run_command(cmd_prepare_synthetic(world, size), t, work / "world.log"),
                   needs_env)
        self.stage("prepare", lambda t: run_command(cmd_prepare_nuscenes(world, prepared, size), t,
                                                    work / "prepare.log"), ("world",))
        for method, recipe in RECIPES.items():
            run_dir = work / f"run_{method}"

            def pretrain(timeout: float, recipe=recipe, run_dir=run_dir) -> dict:
                shutil.rmtree(run_dir, ignore_errors=True)
                args = pretrain_args(recipe, prepared, run_dir, device, size["steps"], size)
                run_command([sys.executable, "-m", "cmcr_cli", *args], timeout, work / f"{run_dir.name}.log")
                return pretrain_figures(run_dir, size["warmup_steps"])

            figures = self.stage(f"pretrain_{method}", pretrain, ("prepare",))
            if figures is not None:
                self.result.setdefault("pretrain", {})[method] = {"recipe": recipe, **figures}
        if self.args.profile:
            profile_dir = Path(self.args.profile).resolve()
            wait, warmup, active = size["profile_steps"]
            run_dir = work / "run_profile"
            argv = pretrain_args(RECIPES["cmcr"], prepared, run_dir, device, wait + warmup + active, size)

            def profile(timeout: float) -> dict:
                shutil.rmtree(run_dir, ignore_errors=True)
                return self.worker("profile", timeout, "profile.log", "--profile", str(profile_dir),
                                   "--steps", f"{wait},{warmup},{active}", "--", *argv)

            figures = self.stage("profile", profile, ("prepare",))
            if figures is not None:
                self.result["profile"] = figures
        junit = work / "junit.xml"

        selection = size["tests"] or TEST_SELECTIONS[self.args.tests]

        def tests(timeout: float) -> dict:
            try:
                run_command(cmd_pytest(junit, selection), timeout, work / "tests.log",
                            env={"CMCR_TEST_DEVICE": device, RECURSION_GUARD: "1"})
            except StageError:
                if not junit.exists():
                    raise
            chosen = self.args.tests if size["tests"] is None else "tiny"
            counts = {"selection": chosen, **junit_counts(junit)}
            self.result["tests"] = counts
            if counts["failed"] or counts["errors"] or counts["passed"] == 0:
                raise StageError(f"{counts['failed']} failed, {counts['errors']} errors, "
                                 f"{counts['passed']} passed; log tail: {_tail(work / 'tests.log', 600)}")
            return counts

        self.stage("tests", tests, needs_env)
        self.result["ok"] = all(s.get("ok") or s.get("skipped") == "not selected"
                                for s in self.result["stages"].values())
        return 0 if self.result["ok"] else 1


def run_worker(args: argparse.Namespace, rest: list[str]) -> dict:
    import device_check_workers as workers

    size = SIZES[args.device]
    if args.worker == "env":
        return workers.environment(args.device)
    if args.worker == "sparse":
        return workers.sparse_step(args.device, args.dtype, size["batch"], size["azimuths"], size["planes"],
                                   size["layers"], size["init_dim"], size["repeats"])
    wait, warmup, active = (int(n) for n in args.steps.split(","))
    return workers.profile_pretraining(args.device, Path(args.profile), rest, wait, warmup, active)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=tuple(SIZES), default="cuda",
                        help="cuda (default): full sizes; cpu: tiny sizes, for CI")
    parser.add_argument("--profile", help="also profile a CMCR pretraining; trace and tables go here")
    parser.add_argument("--work", help="working folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--budget", type=float, help="seconds for all stages (default by device)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of the stages "
                        "(default: all; profile runs only with --profile)")
    parser.add_argument("--tests", choices=tuple(TEST_SELECTIONS), default="quick",
                        help="device-aware tests to run on CUDA: quick (default; no prepared world) or all "
                        "(within what is left of the budget; raise --budget)")
    parser.add_argument("--worker", choices=("env", "sparse", "profile"), help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--steps", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    rest = rest[1:] if rest[:1] == ["--"] else rest
    if args.worker:
        sys.path.insert(0, str(HERE))
        result = run_worker(args, rest)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    args.stages = set(args.stages.split(","))
    unknown = args.stages - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")  # this checkout first
    os.environ.update(SIZES[args.device]["env"])
    check = Check(args)
    start = time.monotonic()
    code = 1
    try:
        code = check.run()
    except Exception as error:  # the JSON line is printed whatever happens
        check.result.update(ok=False, error=f"{type(error).__name__}: {error}")
    finally:
        check.result["total_s"] = round(time.monotonic() - start, 1)
        if args.keep or args.work:
            check.result["work"] = str(check.work)
        else:
            shutil.rmtree(check.work, ignore_errors=True)
    sys.stdout.write(json.dumps(rounded(check.result), default=str) + "\n")
    sys.exit(code)


def rounded(value: Any) -> Any:
    """Floats to 5 significant digits, recursively (one readable line)."""
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
