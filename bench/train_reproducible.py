"""CPU training with a seed: two clean runs, and runs SIGKILLed at random steps then resumed, must give the same
model.safetensors; and what the deterministic kernels cost per step.

    python bench/train_reproducible.py [--text FILE] [--steps 40] [--kills 3] [--seed 0] [--reps 8]

The model is `tfree train --preset tiny` at batch 16 (2.5M weights, v = 8192; the size at which two runs differed
before issue 25). Part 1 runs `tfree train --seed 0` twice and --kills times killed (SIGKILL once the log holds a
random number of steps, a checkpoint every 5) and resumed with --resume auto, and compares the final weights byte
for byte. Part 2 times training steps of one model in one process, alternating three steps with
torch.use_deterministic_algorithms off and three on, --reps times, and prints the median step time of each.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def train_cmd(text: str, out: str, steps: int) -> list[str]:
    return [sys.executable, "-m", "tfree_cli", "train", text, "-o", out, "--preset", "tiny", "--batch-size", "16",
            "--max-steps", str(steps), "--seed", "0", "--save-every", "5", "--log-every", "1", "--val-bytes", "4000",
            "--warmup", "5", "--device", "cpu", "-q", "--no-plot", "--sample-words", "0"]


def weights(run: str) -> str:
    with open(os.path.join(run, "final", "model.safetensors"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def logged_steps(run: str) -> int:
    try:
        with open(os.path.join(run, "log.jsonl"), encoding="utf-8") as f:
            return sum(ln.endswith("}\n") for ln in f)
    except FileNotFoundError:
        return 0


def part1(text: str, steps: int, kills: int, seed: int, work: str) -> bool:
    rng = random.Random(seed)
    clean = []
    for i in range(2):
        out = os.path.join(work, f"clean{i}")
        subprocess.run(train_cmd(text, out, steps), check=True, stdout=subprocess.DEVNULL)
        clean.append(weights(out))
    print(f"two clean runs: {clean[0]} {clean[1]} -> {'identical' if clean[0] == clean[1] else 'DIFFERENT'}")
    ok = clean[0] == clean[1]
    for k in range(kills):
        out = os.path.join(work, f"killed{k}")
        at = rng.randrange(6, steps - 2)
        p = subprocess.Popen(train_cmd(text, out, steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while logged_steps(out) < at and p.poll() is None:
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if os.path.isdir(os.path.join(out, "final")):
            print(f"kill {k}: the run had finished before the kill (step {at}); skipped")
            continue
        subprocess.run(train_cmd(text, out, steps) + ["--resume", "auto"], check=True, stdout=subprocess.DEVNULL)
        got = weights(out)
        ok &= got == clean[0]
        print(f"killed at step {at}, resumed: {got} -> {'identical' if got == clean[0] else 'DIFFERENT'}")
    return ok


def part2(text: str, reps: int, work: str) -> None:
    import torch

    from tfree_codec.train.loop import Run, TrainConfig

    cfg = TrainConfig.of(data=text, out_dir=os.path.join(work, "timing"), preset="tiny", batch_size=16, max_steps=10**6,
                         seed=0, device="cpu", val_bytes=4000, progress=False, plot=False, sample_words=0, warmup=5)
    run = Run(cfg, log=lambda *a: None)
    for _ in range(3):
        run.train_step()
    times = {False: [], True: []}
    for _ in range(reps):
        for det in (False, True):
            torch.use_deterministic_algorithms(det)
            for _ in range(3):
                t0 = time.perf_counter()
                run.train_step()
                times[det].append(time.perf_counter() - t0)
    torch.use_deterministic_algorithms(False)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"step time (median of {3 * reps}), torch {torch.__version__}, {torch.get_num_threads()} threads: "
          f"deterministic off {off * 1e3:.0f} ms, on {on * 1e3:.0f} ms ({on / off - 1:+.1%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", help="training text (default: 400 kB of the bundled sample)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=8)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tfree-repro-")
    try:
        text = args.text
        if text is None:
            from tfree_codec.assets import sample_text

            text = os.path.join(work, "sample.txt")
            with open(text, "w", encoding="utf-8") as f:
                f.write(sample_text(400_000))
        ok = part1(text, args.steps, args.kills, args.seed, work)
        part2(text, args.reps, work)
        sys.exit(0 if ok else 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
