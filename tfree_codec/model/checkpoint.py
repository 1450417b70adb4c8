"""Self-describing checkpoint directories: ``RUN_DIR/step-000500/`` and ``RUN_DIR/final/``.

A checkpoint holds ``model.safetensors`` (the unwrapped state_dict: no ``module.``/``_orig_mod.`` prefixes, no
pickle; checkpoints written before it hold ``model.pt`` instead, read with ``torch.load(weights_only=True)``),
``model_config.json``, ``codec.json``, the dictionary (T-FREE) or
``tokenizer.json`` (BPE), ``calibration.json`` (dictionary-softmax temperature and unseen-word rate),
``train_state.pt`` (optimizer, step, RNG states, data cursor; tensors and plain containers only) and
``train_config.json`` (the run's settings, in training checkpoints and final/) and ``checkpoint.json`` (format,
step, and the sha256 of every other file). It is written to a temporary directory and
renamed into place, so a directory with a ``checkpoint.json`` is always complete; a file that does not match its
checksum is refused in one line.

This module owns those names: the trainer, generation and the CLI ask it for a checkpoint's files
(``find_checkpoint``, ``load_model``, ``load_calibration``, ``load_tokenizer``) rather than spelling them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

import torch

from ..codec import Codec
from ..config import CodecConfig, TfreeError, default_mode
from ..config import file_sha256 as _sha256
from ..decode.calibration import Calibration
from .overtok import STORED_NAMES
from .transformer import Model, ModelConfig
from .weights import WEIGHTS_FILE, load_weights_file, save_weights

FORMAT = "tfree-checkpoint"
FORMAT_VERSION = 1
META = "checkpoint.json"
SETTINGS_FILE = "train_config.json"  # the run's settings (train/settings.py)
MODEL_CONFIG_FILE = "model_config.json"
CODEC_FILE = "codec.json"
DICT_FILE = "dictionary.arrow"       # T-FREE: the decoding dictionary (also in run directories)
TOKENIZER_FILE = "tokenizer.json"    # BPE: the tokenizer (also in run directories)
CALIBRATION_FILE = "calibration.json"
TRAIN_STATE_FILE = "train_state.pt"
BUNDLED_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "model")
PARTIAL = ".tfree-partial"  # inside a checkpoint folder being written; gone once it is complete
STEP_RE = re.compile(r"^step-(\d{6,})$")


def clean_state_dict(sd: dict) -> dict:
    """Strip the wrappers' prefixes (DDP ``module.``, torch.compile ``_orig_mod.``) so checkpoints load anywhere,
    and name each parameter as checkpoints store it (overtok.STORED_NAMES)."""
    out = {}
    for k, v in sd.items():
        while k.startswith(("module.", "_orig_mod.")):
            k = k.split(".", 1)[1]
        out[_renamed(k, STORED_NAMES)] = v
    return out


def _renamed(name: str, pairs) -> str:
    for a, b in pairs:
        if name.startswith(a):
            return b + name[len(a):]
    return name


def save_checkpoint(path: str, model, codec: Codec, *, files: dict | None = None, train_state: dict | None = None,
                    step: int = 0, info: dict | None = None, json_files: dict | None = None) -> str:
    """Write a checkpoint directory atomically. ``files``: name -> existing path to copy in (dictionary,
    tokenizer.json); ``json_files``: name -> a dict written as JSON (calibration.json, train_config.json). Replaces
    an existing checkpoint of the same name."""
    path = os.path.abspath(path)
    parent, name = os.path.dirname(path), os.path.basename(path)
    check_replaceable(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent)  # a new name: nothing of anyone else's is in it
    try:
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's 0700 would keep an exported model from other users
        _write(tmp, PARTIAL, f"{os.getpid()}\n")  # proves the folder ours if we die before the rename
        raw = getattr(model, "module", model)
        raw = getattr(raw, "_orig_mod", raw)
        save_weights(clean_state_dict(raw.state_dict()), os.path.join(tmp, WEIGHTS_FILE), {"format": "pt"})
        _write(tmp, MODEL_CONFIG_FILE, raw.config.to_json() + "\n")
        codec.save(os.path.join(tmp, CODEC_FILE))
        for fname, src in (files or {}).items():
            shutil.copyfile(src, os.path.join(tmp, fname))
        for fname, obj in (json_files or {}).items():
            _write(tmp, fname, json.dumps(obj, indent=2, sort_keys=True) + "\n")
        if train_state is not None:
            torch.save(train_state, os.path.join(tmp, TRAIN_STATE_FILE))
        sums = {f: _sha256(os.path.join(tmp, f)) for f in sorted(os.listdir(tmp)) if f != PARTIAL}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step, "mode": raw.config.mode,
                "files": sums, **(info or {})}
        _write(tmp, META, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.unlink(os.path.join(tmp, PARTIAL))  # complete: from here on its checkpoint.json names every file
        if os.path.exists(path):  # a directory can't be renamed over a non-empty one: move the old one aside first
            old = tempfile.mkdtemp(prefix=f".old-{name}-", dir=parent)  # empty: the rename may replace it
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        full = isinstance(e, RuntimeError) and _nearly_full(parent)  # measured before the partial files go
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, RuntimeError):  # torch's zip writer reports a full disk as "unexpected pos", "write failed"
            why = "No space left on device" if full else "torch: " + str(e).splitlines()[0][:100]
            raise TfreeError(f"{path}: cannot write the checkpoint ({why}); nothing was changed") from None
        if isinstance(e, OSError):  # ENOSPC from a write names no file by itself
            raise TfreeError(f"{path}: cannot write the checkpoint ({e.strerror or e}); nothing was changed") from None
        raise
    return path


def _nearly_full(d: str) -> bool:
    try:
        st = os.statvfs(d)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < 1 << 20


def check_replaceable(path: str) -> None:
    """Refuse to write a checkpoint over anything but a checkpoint whose checkpoint.json names every file in it:
    replacing deletes the old folder, and a command only deletes what it can prove it wrote."""
    if not os.path.lexists(path):
        return
    if (os.getcwd() + os.sep).startswith(path.rstrip(os.sep) + os.sep):
        raise TfreeError(f"{path} is the current directory or holds it: choose a new output directory")
    if not os.path.isdir(path) or os.path.islink(path):
        raise TfreeError(f"{path} exists and is not a checkpoint directory: choose another output")
    here = set(os.listdir(path))
    if not here:
        return
    try:
        with open(os.path.join(path, META), encoding="utf-8") as f:
            meta = json.load(f)
        ours = set(meta["files"]) | {META} if meta.get("format") == FORMAT else set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        ours = set()
    if not ours or here - ours:
        extra = sorted(here - ours)
        raise TfreeError(f"{path} is not empty and holds files tfree did not write ({', '.join(extra[:3])}"
                         f"{', ...' if len(extra) > 3 else ''}): choose a new or empty output directory")


def clean_partial(run_dir: str) -> list[str]:
    """Remove the temporary checkpoint folders a killed save left in ``run_dir``: only those that still hold our
    marker file (any other ``.tmp-*`` is left alone)."""
    gone = []
    for d in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else ():
        p = os.path.join(run_dir, d)
        if d.startswith((".tmp-", ".old-")) and os.path.isdir(p) and not os.path.islink(p) and (
                os.path.isfile(os.path.join(p, PARTIAL)) or os.path.isfile(os.path.join(p, META))):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(d)
    return gone


def _write(d: str, name: str, text: str) -> None:
    with open(os.path.join(d, name), "w", encoding="utf-8") as f:
        f.write(text)


def read_meta(path: str, verify: bool = True) -> dict:
    """checkpoint.json of ``path``, after checking every listed file against its sha256."""
    mpath = os.path.join(path, META)
    if not os.path.isdir(path):
        raise TfreeError(f"{path!r} is not a checkpoint directory")
    try:
        with open(mpath, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise TfreeError(f"{path}: no {META} (not a tfree checkpoint, or an incomplete one)") from None
    except (OSError, ValueError) as e:
        raise TfreeError(f"{path}: unreadable {META} ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TfreeError(f"{path}: {META} is not a {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise TfreeError(f"{path}: checkpoint format_version {meta.get('format_version')!r} is not supported "
                         f"(this tfree reads {FORMAT_VERSION})")
    for key, least in (("step", 0), ("chunk_words", 1)):  # read as integers by export and eval
        v = meta.get(key, least)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= least):
            raise TfreeError(f"{path}: {META} is damaged (its {key} is {v!r}, not an integer >= {least})")
    files = meta.get("files", {})
    if not isinstance(files, dict):
        raise TfreeError(f"{path}: {META} is damaged (its files are not a name -> sha256 table)")
    for fname, digest in files.items():
        # a name such as ../../x would have tfree hash a file outside the checkpoint and say whether it exists
        if not _plain_name(fname) or not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise TfreeError(f"{path}: {META} is damaged (it lists {fname!r}, not a file of this folder with a sha256)")
    if verify:
        for fname, digest in files.items():
            fpath = os.path.join(path, fname)
            if not os.path.isfile(fpath):
                raise TfreeError(f"{path}: checkpoint is incomplete: {fname} is missing")
            if _sha256(fpath) != digest:
                raise TfreeError(f"{path}: checkpoint is corrupt: {fname} does not match its sha256")
    return meta


def _plain_name(name) -> bool:
    """A file directly inside the checkpoint folder: no separator, not . or .., not hidden."""
    return isinstance(name, str) and name not in ("", ".", "..") and not name.startswith(".") and "/" not in name \
        and os.sep not in name and "\0" not in name


def load_model(path: str, device="cpu", verify: bool = True):
    """(model, codec, meta) of a checkpoint; one-line TfreeError for anything corrupt or inconsistent."""
    meta = read_meta(path, verify)
    config = read_model_config(path)
    codec = Codec(CodecConfig.load(os.path.join(path, CODEC_FILE)))
    if config.tfree and config.vocab_size != codec.vocab_size:
        raise TfreeError(f"{path}: model has {config.vocab_size} activation rows but the codec has v = {codec.vocab_size}")
    sd = read_state_dict(path)
    with torch.device("meta"):  # the shapes the config asks for, before allocating them: a hostile config asking
        check_weights(Model(config), sd, path)  # for a huge model is refused against the (small) weights file
    model = Model(config)
    load_weights(model, sd, path)
    return model.to(device), codec, meta


def read_model_config(path: str) -> ModelConfig:
    """The ModelConfig of checkpoint directory ``path``."""
    try:
        with open(os.path.join(path, MODEL_CONFIG_FILE), encoding="utf-8") as f:
            return ModelConfig.from_json(f.read())
    except OSError as e:
        raise TfreeError(f"{path}: cannot read {MODEL_CONFIG_FILE} ({e.strerror})") from None


def read_state_dict(path: str) -> dict:
    """The weights of checkpoint directory ``path``: model.safetensors, else (older checkpoints) model.pt."""
    if os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
        return load_weights_file(os.path.join(path, WEIGHTS_FILE))
    try:
        return torch.load(os.path.join(path, "model.pt"), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TfreeError(f"{path}: no {WEIGHTS_FILE} (nor an older model.pt)") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise TfreeError(f"{path}: cannot load model.pt ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


# Stored dtypes a float32 weight may come from: itself, or the narrower floats of `tfree export --half` (widened
# exactly). Anything else (float64, integers) is not what tfree wrote.
_FLOAT_STORED = (torch.float32, torch.float16, torch.bfloat16)


def check_weights(model: Model, sd: dict, where: str) -> None:
    """Refuse stored weights ``sd`` whose names, shapes or stored dtypes do not fit ``model`` (which may live on
    the meta device); one line naming ``where`` (the weights by their stored names)."""
    sd, own = clean_state_dict(sd), clean_state_dict(model.state_dict())
    missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or extra:
        raise TfreeError(f"{where}: weights do not fit the model config (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise TfreeError(f"{where}: weight {k} has shape {tuple(v.shape)}, the model config wants {tuple(own[k].shape)}")
        ok = _FLOAT_STORED if own[k].dtype == torch.float32 else (own[k].dtype,)
        if v.dtype not in ok:
            raise TfreeError(f"{where}: weight {k} is stored as {v.dtype}, the model wants {own[k].dtype}")


def load_weights(model: Model, sd: dict, where: str) -> None:
    """Load stored weights ``sd`` into ``model``; one line naming ``where`` if they do not fit it."""
    check_weights(model, sd, where)
    sd = clean_state_dict(sd)
    model.load_state_dict({_renamed(k, [(b, a) for a, b in STORED_NAMES]): v for k, v in sd.items()})


def load_train_state(path: str) -> dict:
    try:
        return torch.load(os.path.join(path, TRAIN_STATE_FILE), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TfreeError(f"{path}: no {TRAIN_STATE_FILE} (a final or exported checkpoint cannot be resumed)") from None
    except Exception as e:  # noqa: BLE001
        raise TfreeError(f"{path}: cannot load {TRAIN_STATE_FILE} ({type(e).__name__})") from None


def load_calibration(path: str) -> Calibration:
    """The checkpoint directory's calibration.json; the defaults when it has none."""
    try:
        with open(os.path.join(path, CALIBRATION_FILE), encoding="utf-8") as f:
            return Calibration.from_dict(json.load(f))
    except FileNotFoundError:
        return Calibration()
    except (ValueError, RecursionError, TfreeError) as e:  # bad JSON, nested brackets, a field of the wrong kind
        raise TfreeError(f"{path}: {CALIBRATION_FILE} is unreadable or wrong ({e})") from None


def load_tokenizer(path: str):
    """The HF ``tokenizers.Tokenizer`` in file ``path`` (a checkpoint's or run's tokenizer.json)."""
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415
    except ImportError:
        raise TfreeError("the BPE baseline needs HF tokenizers: pip install 'tfree-codec[baseline]'") from None
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001
        raise TfreeError(f"cannot read tokenizer {path!r} ({e})") from None


def find_checkpoint(path: str | None) -> str:
    """The checkpoint directory meant by ``path``: a checkpoint itself, a run directory (its final/, else its
    newest step-NNNNNN/) or, for None, the bundled model."""
    if path is None:
        if not os.path.isfile(os.path.join(BUNDLED_MODEL, META)):
            raise TfreeError("this install has no bundled model (tfree_codec/assets/model): give a run or checkpoint directory")
        return BUNDLED_MODEL
    if not os.path.exists(path):
        raise TfreeError(f"{path}: no such run or checkpoint directory")
    if not os.path.isdir(path):
        raise TfreeError(f"{path} is a file: give a run directory or a checkpoint directory (RUN/final)")
    if os.path.isfile(os.path.join(path, META)):
        return path
    if os.path.isfile(os.path.join(path, "final", META)):
        return os.path.join(path, "final")
    latest = latest_checkpoint(path)
    if latest is None:
        raise TfreeError(f"{path} holds no tfree checkpoint (no checkpoint.json, final/ or step-NNNNNN/)")
    return latest


def latest_checkpoint(run_dir: str) -> str | None:
    """The newest complete ``step-NNNNNN`` checkpoint of a run directory (None if there is none)."""
    if not os.path.isdir(run_dir):
        return None
    steps = [(int(m.group(1)), d) for d in os.listdir(run_dir) if (m := STEP_RE.match(d))
             and os.path.isfile(os.path.join(run_dir, d, META))]
    return os.path.join(run_dir, max(steps)[1]) if steps else None


def step_dir(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, f"step-{step:06d}")


def prune_checkpoints(run_dir: str, keep_last: int) -> list[str]:
    """Delete all but the newest ``keep_last`` complete ``step-NNNNNN`` checkpoints of a run (``--keep-last``);
    -> the directories deleted. Only directories this module wrote are touched: a step name and a checkpoint.json
    of this format; final/ is never one of them."""
    if keep_last < 1 or not os.path.isdir(run_dir):
        return []
    steps = sorted((int(m.group(1)), d) for d in os.listdir(run_dir) if (m := STEP_RE.match(d))
                   and not os.path.islink(os.path.join(run_dir, d)))  # a link is the user's: neither counted nor removed
    done = []
    for _, d in steps:
        try:
            with open(os.path.join(run_dir, d, META), encoding="utf-8") as f:
                if json.load(f).get("format") == FORMAT:
                    done.append(d)
        except (OSError, ValueError):
            continue  # incomplete or not ours: left alone
    gone = [os.path.join(run_dir, d) for d in done[:max(0, len(done) - keep_last)]]
    for d in gone:
        shutil.rmtree(d)
    return gone
