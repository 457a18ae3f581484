"""Runs `sll bench step` and the PyTorch reference alternately, several rounds, and
prints each median samples/s and the ratio ours / PyTorch.

    python bench/reference/compare.py [--rounds 5] [--models mlp,cnn] [--methods sll,local,bp]
                                      [--threads 2] [--sll target/release/sll] [--set KEY=VALUE ...]
                                      [--device cuda] [--steps N] [--warmup N]

`--device` runs both on that device (sll through its `--device` if `sll bench step`
has one, else through `--set train.device=...`); `--steps`/`--warmup` replace the
per-model defaults (mlp 40/10, cnn 8/3 steps), e.g. for the much faster steps of a GPU.

Run it with the Python that has torch installed (see bench/reference/README.md).
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_json(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"compare.py: {' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--methods", default="sll,local,bp")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sll", default=str(HERE.parent.parent / "target" / "release" / "sll"))
    ap.add_argument("--set", action="append", default=[], help="config override for sll only (e.g. objective.projection=sparse)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both engines)")
    ap.add_argument("--steps", type=int, help="timed steps of every model (default: mlp 40, cnn 8)")
    ap.add_argument("--warmup", type=int, help="warm-up steps of every model (default: mlp 10, cnn 3)")
    a = ap.parse_args()
    steps = {"mlp": ("40", "10"), "cnn": ("8", "3")}
    steps = {m: (str(a.steps or n), str(a.warmup or w)) for m, (n, w) in steps.items()}
    device_sets = []
    if a.device != "cpu":
        bench_help = subprocess.run([a.sll, "bench", "step", "--help"], capture_output=True, text=True).stdout
        device_sets = ["--device", a.device] if "--device" in bench_help else ["--set", f'train.device="{a.device}"']
    results = {}
    for r in range(a.rounds):
        for model in a.models.split(","):
            for method in a.methods.split(","):
                n, w = steps[model]
                common = ["--model", model, "--method", method, "--steps", n, "--warmup", w, "--threads", str(a.threads), "--json"]
                ours_cmd = [a.sll, "bench", "step", *common, "--rounds", "1", *device_sets] + [x for s in a.set for x in ("--set", s)]
                ref_cmd = [sys.executable, str(HERE / "step.py"), *common, "--device", a.device]
                ours = run_json(ours_cmd)
                ref = run_json(ref_cmd)
                key = (model, method)
                results.setdefault(key, ([], []))
                results[key][0].append(ours["samples_per_second"])
                results[key][1].append(ref["samples_per_second"])
                print(f"round {r + 1}: {model} {method}: sll {ours['samples_per_second']:.0f}, pytorch {ref['samples_per_second']:.0f} samples/s", file=sys.stderr)
    print(f"{'model':6} {'method':6} {'sll samples/s':>14} {'pytorch samples/s':>18} {'ratio':>7}   (medians of {a.rounds} rounds, {a.threads} threads, {a.device})")
    for (model, method), (ours, ref) in results.items():
        mo, mr = statistics.median(ours), statistics.median(ref)
        print(f"{model:6} {method:6} {mo:14.0f} {mr:18.0f} {mo / mr:7.2f}")


if __name__ == "__main__":
    main()
