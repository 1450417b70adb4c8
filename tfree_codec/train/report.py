"""What a run shows while it trains, beside ``log.jsonl``: a CSV or TensorBoard log (``--logger``), a PNG of its
loss and validation bits per byte (``plot.png``, redrawn at each evaluation), ``tfree plot RUN...`` (several runs
side by side), and a short greedy sample at each evaluation (as litgpt prints one).

matplotlib and tensorboard are optional (``pip install tfree-codec[plot]``): without them the run says so in one
line and goes on. Greedy sampling draws no random numbers, so a resumed run stays bit-exact.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os

from ..config import TfreeError, atomic_write

LOG_FILE, CSV_FILE, PLOT_FILE, TB_DIR = "log.jsonl", "log.csv", "plot.png", "tensorboard"
RUN_FILES = (LOG_FILE, CSV_FILE, PLOT_FILE, TB_DIR)  # what a run writes beside its checkpoints and dictionary
CSV_COLUMNS = ("step", "bytes_seen", "loss", "lr", "bytes_per_s", "val_bpb", "sample")
LOGGERS = ("csv", "tensorboard", "wandb")


def read_log(run_dir: str) -> list[dict]:
    """The records of a run's log.jsonl (a run directory or the file itself)."""
    path = run_dir if run_dir.endswith(".jsonl") else os.path.join(run_dir, LOG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(i, ln) for i, ln in enumerate(f, 1) if ln.strip()]
    except FileNotFoundError:
        raise TfreeError(f"{run_dir}: no {LOG_FILE} (not a tfree run directory)") from None
    except ValueError as e:
        raise TfreeError(f"{path}: not UTF-8 text ({e})") from None
    out = []
    for i, ln in lines:
        try:
            r = json.loads(ln)
        except (ValueError, RecursionError):
            raise TfreeError(f"{path}: line {i} is not JSON") from None
        bad = "not a JSON object" if not isinstance(r, dict) else next(
            (f"its {k} is {r[k]!r}, not a number" for k in NUMBERS if k in r and not _is_number(r[k])), None)
        if bad:
            raise TfreeError(f"{path}: line {i} is not a log record ({bad})")
        out.append(r)
    return out


NUMBERS = ("step", "loss", "lr", "val_bpb", "bytes_seen", "bytes_per_s")  # what plots and CSVs read


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def truncate_log(path: str, step: int) -> None:
    """Drop log records past ``step`` (left by a run that died after its last checkpoint)."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        keep = [ln for ln in f if step and record_step(ln) <= step]
    atomic_write(path, "".join(keep).encode("utf-8"))


def record_step(line: str) -> float:
    """A log line's step; inf for a line that is not a whole record (a write cut short by a full disk or a kill)."""
    try:
        r = json.loads(line)
        return r.get("step", 0) if isinstance(r, dict) and line.endswith("\n") else math.inf
    except ValueError:
        return math.inf


class Loggers:
    """The logs of a run: log.jsonl, and the extra ones of ``names`` (from LOGGERS). log.csv is rebuilt from
    log.jsonl when the run starts, so a resumed run's CSV holds exactly its JSON log's records."""

    def __init__(self, run_dir: str, names=(), step: int = 0, say=print, settings: dict | None = None):
        self.csv = self.tb = self.wandb = None
        self.jsonl = os.path.join(run_dir, LOG_FILE)
        unknown = set(names) - set(LOGGERS)
        if unknown:
            raise TfreeError(f"unknown logger {sorted(unknown)[0]!r} (choose from {', '.join(LOGGERS)})")
        if "csv" in names:
            old = read_log(run_dir) if os.path.isfile(os.path.join(run_dir, LOG_FILE)) else []
            self._csv_file = open(os.path.join(run_dir, CSV_FILE), "w", newline="", encoding="utf-8")
            self.csv = csv.DictWriter(self._csv_file, CSV_COLUMNS, extrasaction="ignore")
            self.csv.writeheader()
            for r in old:
                self.csv.writerow(r)
            self._csv_file.flush()
        if "tensorboard" in names:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
            except ImportError:
                say("--logger tensorboard: the tensorboard package is not installed (pip install "
                    "'tfree-codec[tensorboard]'); skipped")
            else:
                self.tb = SummaryWriter(os.path.join(run_dir, TB_DIR), purge_step=step or None)
        if "wandb" in names:
            self.wandb = _wandb_run(run_dir, settings, say)

    def write(self, record: dict) -> None:
        try:
            with open(self.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if self.csv is not None:
                self.csv.writerow(record)
                self._csv_file.flush()
        except OSError as e:  # a full disk: say which file
            raise OSError(e.errno, e.strerror, e.filename or self.jsonl) from None
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])
            if "sample" in record:
                self.tb.add_text("sample", record["sample"], record["step"])
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float, str))},
                           step=record["step"])

    def close(self) -> None:
        if self.csv is not None:
            self._csv_file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()



def temperature_text(t: float) -> str:
    """The fitted dictionary-softmax temperature as a reader can take it: a model whose scores do not yet tell
    words apart fits a huge one (963138 after 2 steps), which is "flat", not a number to read."""
    return f"{t:.4f}" if t < 100 else f"{t:.3g}: flat, the scores do not tell words apart yet"

def _wandb_run(run_dir: str, settings: dict | None, say):
    """A Weights & Biases run named after the run directory, with the run's settings as its config; its id comes
    from the directory and the seed, so a resumed run goes on logging into the same W&B run. WANDB_PROJECT (default
    tfree), WANDB_ENTITY, WANDB_MODE=offline and the other WANDB_* variables apply as usual."""
    try:
        import wandb  # noqa: PLC0415
    except ImportError:
        say("--logger wandb: the wandb package is not installed (pip install 'tfree-codec[wandb]'); skipped")
        return None
    settings = dict(settings or {})
    key = f"{os.path.abspath(run_dir)}\0{settings.get('seed')}".encode("utf-8", "surrogatepass")
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "tfree"), name=os.path.basename(os.path.abspath(run_dir)),
                      id=hashlib.sha256(key).hexdigest()[:16], resume="allow", dir=run_dir, config=settings)


def _pyplot():
    try:
        import matplotlib  # noqa: PLC0415
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_runs(run_dirs, out: str, labels=None) -> str | None:
    """A PNG of validation bits per byte against bytes of text seen (the figure T-FREE and BPE runs share) and of
    each run's training loss against steps; -> ``out``, or None when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return None
    logs = [read_log(d) for d in run_dirs]
    labels = list(labels or [os.path.basename(os.path.normpath(d)) or d for d in run_dirs])
    fig, (ax_bpb, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for log, label in zip(logs, labels):
        val = [(r["bytes_seen"] / 1e6, r["val_bpb"]) for r in log if "val_bpb" in r]
        if val:
            ax_bpb.plot(*zip(*val), marker="o", ms=3, label=label)
        loss = [(r["step"], r["loss"]) for r in log if "loss" in r]
        if loss:
            ax_loss.plot(*zip(*loss), lw=1, label=label)
    ax_bpb.set(xlabel="MB of text seen", ylabel="validation bits per byte", title="validation bits per byte")
    ax_loss.set(xlabel="step", ylabel="training loss", title="training loss (T-FREE: BCE, BPE: cross-entropy)")
    for ax in (ax_bpb, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = os.path.join(os.path.dirname(os.path.abspath(out)), f".tmp-{os.getpid()}-{os.path.basename(out)}")
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, out)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, out) from None
        raise
    finally:
        plt.close(fig)
    return out


def greedy_sample(run, n_words: int = 24, prompt_words: int = 8) -> str:
    """The first ``prompt_words`` words of the first validation unit, then up to ``n_words`` greedy items (T-FREE:
    the argmax of the calibrated dictionary softmax), generated as ``tfree generate`` does (without the KV cache,
    as a full forward over the window each step), until the end of the document."""
    from ..generate.language_model import generate  # noqa: PLC0415

    words = run.sample_prompt(prompt_words)
    if not words:
        return ""
    run.model.eval()
    return run.codec.join(words) + generate(run.model, run.codec, run.sampling_vocabulary(), words,
                                            max_new_tokens=n_words, temperature=0, use_cache=False)
