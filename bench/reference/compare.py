"""Runs `sll bench step` and the PyTorch reference alternately, several rounds, and
prints each median samples/s and the ratio ours / PyTorch.

    python bench/reference/compare.py [--rounds 5] [--models mlp,cnn] [--methods sll,local,bp]
                                      [--threads 2] [--sll target/release/sll] [--set KEY=VALUE ...]
                                      [--device cuda] [--steps N] [--warmup N]

`--device` runs both on that device (sll through its `--device` if `sll bench step`
has one, else through `--set train.device=...`); `--steps`/`--warmup` replace the
per-model defaults (mlp 40/10, cnn 8/3 steps), e.g. for the much faster steps of a GPU.

`--end-to-end` compares whole training runs instead (time to accuracy): for each preset
of `--presets` (default mnist-mlp) and each of `--rounds` rounds (default 1), it runs
`sll train` and bench/reference/train.py (the same preset in PyTorch) alternately and
prints, per engine, the training minutes to each of `--thresholds` (default 98.0,98.5 %)
test accuracy, the final accuracy and the median seconds per epoch. Training time only:
evaluation is excluded for both engines (ours' metrics.jsonl `seconds`, train.py's
`seconds`).

    python bench/reference/compare.py --end-to-end [--presets mnist-mlp,cifar10-vgg]
        [--epochs N] [--rounds 1] [--threads 2] [--data-dir D] [--train-subset N]
        [--test-subset N] [--thresholds 98.0,98.5] [--seed S] [--out results.json]

`--epochs` defaults to the preset's own (15 for mnist-mlp), and to 3 for cifar10-vgg.

`--amp` (steps and `--end-to-end`): both engines in bf16 mixed precision, sll with
`--precision bf16`, PyTorch under `torch.autocast(device, torch.bfloat16)` (step.py and
train.py `--amp`); without it both run fp32 (sll `--precision fp32`).

Run it with the Python that has torch installed (see bench/reference/README.md).
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# Epochs of `--end-to-end` when `--epochs` is not given (others: the preset's own).
E2E_EPOCHS = {"cifar10-vgg": 3}
DATASET_FOLDERS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "cifar10": "cifar-10", "cifar100": "cifar-100"}


def run_json(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"compare.py: {' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_checked(cmd, what):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"compare.py: {what}: {' '.join(cmd)} failed ({done.returncode}):\n{(done.stderr or done.stdout).strip()[-3000:]}")
    return done


def preset_config(preset):
    path = Path(preset) if Path(preset).is_file() else REPO / "configs" / f"{preset}.toml"
    if not path.is_file():
        sys.exit(f"compare.py: --presets {preset}: no such file nor preset in {REPO / 'configs'}")
    with open(path, "rb") as f:
        return tomllib.load(f)


def data_dir_for(dataset, given):
    """The folder holding <dataset folder>/ (the same for both engines)."""
    folder = DATASET_FOLDERS.get(dataset, dataset)
    candidates = [Path(given)] if given else [REPO / "data", REPO.parent / "shared" / "data"]
    for c in candidates:
        if (c / folder).is_dir():
            return c.resolve()
    sys.exit(f"compare.py: no {folder}/ under {', '.join(map(str, candidates))} (give --data-dir)")


def run_ours(a, preset, epochs, data_dir):
    """`sll train` into a fresh run directory; per epoch (training seconds, test accuracy %)."""
    tmp = Path(tempfile.mkdtemp(prefix="sll-e2e-"))
    try:
        cmd = [a.sll, "train", "--config", preset, "--epochs", str(epochs), "--threads", str(a.threads),
               "--out", str(tmp / "run"), "--data-dir", str(data_dir), "--precision", "bf16" if a.amp else "fp32"]
        if a.seed is not None:
            cmd += ["--seed", str(a.seed)]
        if a.device != "cpu":
            cmd += ["--device", a.device]
        if a.train_subset:
            cmd += ["--set", f"data.train_subset={a.train_subset}"]
        if a.test_subset:
            cmd += ["--set", f"data.test_subset={a.test_subset}"]
        cmd += [x for s in a.set for x in ("--set", s)]
        run_checked(cmd, f"sll {preset}")
        lines = (tmp / "run" / "metrics.jsonl").read_text().splitlines()
        return [(m["seconds"], 100.0 * m["test_accuracy"]) for m in map(json.loads, lines)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_reference(a, preset, epochs, data_dir):
    """bench/reference/train.py; per epoch (training seconds, test accuracy %)."""
    cmd = [sys.executable, str(HERE / "train.py"), "--config", preset, "--epochs", str(epochs),
           "--threads", str(a.threads), "--data-dir", str(data_dir), "--device", a.device] + (["--amp"] if a.amp else [])
    if a.seed is not None:
        cmd += ["--seed", str(a.seed)]
    if a.train_subset:
        cmd += ["--train-subset", str(a.train_subset)]
    if a.test_subset:
        cmd += ["--test-subset", str(a.test_subset)]
    done = run_checked(cmd, f"pytorch {preset}")
    lines = [json.loads(l) for l in done.stdout.splitlines() if l.startswith("{")]
    return [(m["epoch_seconds"], m["test_accuracy"]) for m in lines]


def time_to(history, threshold):
    """Cumulative training seconds at the first epoch at or above `threshold` %, and that epoch."""
    total = 0.0
    for epoch, (seconds, accuracy) in enumerate(history, 1):
        total += seconds
        if accuracy >= threshold:
            return total, epoch
    return None


def end_to_end(a):
    rounds = a.rounds or 1
    thresholds = [float(t) for t in a.thresholds.split(",")]
    presets = a.presets.split(",")
    plan = {}
    for preset in presets:
        config = preset_config(preset)
        epochs = a.epochs or E2E_EPOCHS.get(preset) or config.get("train", {}).get("epochs", 15)
        plan[preset] = (epochs, data_dir_for(config.get("data", {}).get("dataset", "mnist"), a.data_dir))
    engines = {"sll": run_ours, "pytorch": run_reference}
    results = {(p, e): [] for p in presets for e in engines}
    for r in range(rounds):
        for preset in presets:
            epochs, data_dir = plan[preset]
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for engine in order:
                history = engines[engine](a, preset, epochs, data_dir)
                results[(preset, engine)].append(history)
                total = sum(s for s, _ in history)
                print(f"round {r + 1}: {preset} {engine}: {len(history)} epochs, {total:.1f} s training, "
                      f"final {history[-1][1]:.2f} %", file=sys.stderr)
    if a.out:
        Path(a.out).write_text(json.dumps({
            "threads": a.threads, "device": a.device, "rounds": rounds, "train_subset": a.train_subset,
            "runs": [{"preset": p, "engine": e, "round": i + 1,
                      "epochs": [{"seconds": s, "test_accuracy": acc} for s, acc in h]}
                     for (p, e), hs in results.items() for i, h in enumerate(hs)],
        }, indent=1))

    def fmt_time(hs, threshold):
        reached = [t for t in (time_to(h, threshold) for h in hs) if t]
        if not reached:
            return "not reached"
        text = f"{statistics.median(t for t, _ in reached) / 60:.2f} (ep {statistics.median(e for _, e in reached):g})"
        return text if len(reached) == len(hs) else f"{text} {len(reached)}/{len(hs)}"

    subset = f", first {a.train_subset} training examples" if a.train_subset else ""
    print(f"end to end: minutes of training (evaluation excluded for both engines) to the first epoch at each "
          f"test accuracy; medians of {rounds} round(s), {a.threads} threads, {a.device}{subset}")
    head = f"{'preset':12} {'engine':8} {'epochs':>6} " + " ".join(f"{f'min to {t:.1f} %':>16}" for t in thresholds)
    print(head + f" {'final acc %':>11} {'s/epoch':>8}")
    for preset in presets:
        for engine in engines:
            hs = results[(preset, engine)]
            per_epoch = statistics.median(s for h in hs for s, _ in h)
            final = statistics.median(h[-1][1] for h in hs)
            cells = " ".join(f"{fmt_time(hs, t):>16}" for t in thresholds)
            print(f"{preset:12} {engine:8} {len(hs[0]):6d} {cells} {final:11.2f} {per_epoch:8.2f}")
    print("speed-up of sll over pytorch (pytorch time / sll time; > 1: sll is faster):")
    for preset in presets:
        ours, ref = results[(preset, "sll")], results[(preset, "pytorch")]
        parts = []
        t = thresholds[-1]
        to_ours = [x for x in (time_to(h, t) for h in ours) if x]
        to_ref = [x for x in (time_to(h, t) for h in ref) if x]
        if to_ours and to_ref:
            ratio = statistics.median(x for x, _ in to_ref) / statistics.median(x for x, _ in to_ours)
            parts.append(f"time to {t:.1f} %: {ratio:.2f}x")
        else:
            parts.append(f"time to {t:.1f} %: n/a (not reached by {'both' if not to_ours and not to_ref else 'sll' if not to_ours else 'pytorch'})")
        per = statistics.median(s for h in ref for s, _ in h) / statistics.median(s for h in ours for s, _ in h)
        parts.append(f"per epoch: {per:.2f}x")
        print(f"  {preset}: " + ", ".join(parts))
    print("test accuracy after each epoch (%, median over rounds):")
    for preset in presets:
        for engine in engines:
            hs = results[(preset, engine)]
            accs = [statistics.median(h[i][1] for h in hs) for i in range(min(len(h) for h in hs))]
            print(f"  {preset:12} {engine:8} " + " ".join(f"{x:.2f}" for x in accs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--end-to-end", action="store_true", help="compare whole training runs (time to accuracy), not steps")
    ap.add_argument("--presets", default="mnist-mlp", help="--end-to-end: presets, comma-separated")
    ap.add_argument("--epochs", type=int, help="--end-to-end: epochs of every preset (default: the preset's; cifar10-vgg 3)")
    ap.add_argument("--thresholds", default="98.0,98.5", help="--end-to-end: test accuracies (%%) to time")
    ap.add_argument("--data-dir", help="--end-to-end: folder holding <dataset>/ (default: data/, then ../shared/data/)")
    ap.add_argument("--train-subset", type=int, default=0, help="--end-to-end: train on the first N examples (quick checks)")
    ap.add_argument("--test-subset", type=int, default=0, help="--end-to-end: evaluate on the first N test examples")
    ap.add_argument("--seed", type=int, help="--end-to-end: run seed of both engines (default: the preset's)")
    ap.add_argument("--out", help="--end-to-end: also write every run's per-epoch seconds and accuracy to this JSON file")
    ap.add_argument("--rounds", type=int, help="rounds (default: 5 for steps, 1 for --end-to-end)")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--methods", default="sll,local,bp")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sll", default=str(HERE.parent.parent / "target" / "release" / "sll"))
    ap.add_argument("--set", action="append", default=[], help="config override for sll only (e.g. objective.projection=sparse)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both engines)")
    ap.add_argument("--steps", type=int, help="timed steps of every model (default: mlp 40, cnn 8)")
    ap.add_argument("--warmup", type=int, help="warm-up steps of every model (default: mlp 10, cnn 3)")
    ap.add_argument("--amp", action="store_true",
                    help="bf16 mixed precision on both sides: sll --precision bf16 against PyTorch under "
                         "torch.autocast(device, torch.bfloat16) (default: both fp32)")
    a = ap.parse_args()
    if a.end_to_end:
        return end_to_end(a)
    a.rounds = a.rounds or 5
    steps = {"mlp": ("40", "10"), "cnn": ("8", "3")}
    steps = {m: (str(a.steps or n), str(a.warmup or w)) for m, (n, w) in steps.items()}
    device_sets = []
    if a.device != "cpu":
        bench_help = subprocess.run([a.sll, "bench", "step", "--help"], capture_output=True, text=True).stdout
        device_sets = ["--device", a.device] if "--device" in bench_help else ["--set", f'train.device="{a.device}"']
    precision = "bf16" if a.amp else "fp32"
    results = {}
    for r in range(a.rounds):
        for model in a.models.split(","):
            for method in a.methods.split(","):
                n, w = steps[model]
                common = ["--model", model, "--method", method, "--steps", n, "--warmup", w, "--threads", str(a.threads), "--json"]
                ours_cmd = [a.sll, "bench", "step", *common, "--rounds", "1", "--precision", precision, *device_sets] + [x for s in a.set for x in ("--set", s)]
                ref_cmd = [sys.executable, str(HERE / "step.py"), *common, "--device", a.device] + (["--amp"] if a.amp else [])
                ours = run_json(ours_cmd)
                ref = run_json(ref_cmd)
                key = (model, method)
                results.setdefault(key, ([], []))
                results[key][0].append(ours["samples_per_second"])
                results[key][1].append(ref["samples_per_second"])
                print(f"round {r + 1}: {model} {method}: sll {ours['samples_per_second']:.0f}, pytorch {ref['samples_per_second']:.0f} samples/s", file=sys.stderr)
    print(f"{'model':6} {'method':6} {'sll samples/s':>14} {'pytorch samples/s':>18} {'ratio':>7}   (medians of {a.rounds} rounds, {a.threads} threads, {a.device}, {'bf16: sll --precision bf16, pytorch torch.autocast' if a.amp else 'fp32'})")
    for (model, method), (ours, ref) in results.items():
        mo, mr = statistics.median(ours), statistics.median(ref)
        print(f"{model:6} {method:6} {mo:14.0f} {mr:18.0f} {mo / mr:7.2f}")


if __name__ == "__main__":
    main()
