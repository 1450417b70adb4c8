"""``CodecConfig``: the one frozen description of a codec, saved as ``codec.json`` beside everything it made."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass

from .text._unicode import TABLE_VERSION

FORMAT_VERSION = 1


class TfreeError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""


def _icu_version() -> str:
    try:
        import icu
    except ImportError:  # pragma: no cover - pyicu-wheels is a dependency
        return "unavailable"
    return f"icu-{icu.ICU_VERSION}"


@dataclass(frozen=True)
class CodecConfig:
    """How text becomes words and words become activation patterns. Every field changes the patterns.

    vocab_size (v): rows of the activation space; a power of two for the ``tfree`` hash.
    num_activations (m): distinct rows each trigram activates.
    k_lower: of those m, how many come from the lower-cased trigram (case sharing; 0 turns it off).
    hash: ``"tfree"`` (fast, the default) or ``"aleph"`` (the T-FREE reference's md5 rule, for its checkpoints).
    seed: seeds the ``tfree`` hash family.
    max_word_chars: longer letter runs are cut into pieces joined by ``<|no_ws|>``.
    segmenter: ``"icu"`` segments runs of Han, Kana, Thai, Lao, Khmer and Myanmar into words; ``"none"`` keeps
        them whole (up to max_word_chars). segmenter_version pins the segmentation; unicode_tables the
        character classes.
    """

    vocab_size: int = 8192
    num_activations: int = 10
    k_lower: int = 2
    hash: str = "tfree"
    seed: int = 0
    max_word_chars: int = 32
    segmenter: str = "icu"
    segmenter_version: str = dataclasses.field(default_factory=_icu_version)
    unicode_tables: str = TABLE_VERSION
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "num_activations", "k_lower", "seed", "max_word_chars", "format_version"):
            if isinstance(getattr(self, name), bool):  # JSON true is not the integer 1
                problems.append(f"{name} must be an integer, not {getattr(self, name)!r}")
        if problems:
            raise TfreeError("invalid codec config: " + "; ".join(problems))
        if self.format_version != FORMAT_VERSION:
            problems.append(f"format_version {self.format_version} is not supported (this tfree reads {FORMAT_VERSION})")
        if self.hash not in ("tfree", "aleph"):
            problems.append(f"hash must be 'tfree' or 'aleph', not {self.hash!r}")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 16 or self.vocab_size > 1 << 24:
            problems.append(f"vocab_size must be an integer in [16, 2^24], not {self.vocab_size!r}")
        elif self.hash == "tfree" and self.vocab_size & (self.vocab_size - 1):
            problems.append(f"vocab_size must be a power of two for the 'tfree' hash, not {self.vocab_size}")
        if not isinstance(self.num_activations, int) or not 1 <= self.num_activations <= 64:
            problems.append(f"num_activations must be in [1, 64], not {self.num_activations!r}")
        elif not isinstance(self.k_lower, int) or not 0 <= self.k_lower <= self.num_activations:
            problems.append(f"k_lower must be in [0, num_activations], not {self.k_lower!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 1 << 63:
            problems.append(f"seed must be a non-negative 63-bit integer, not {self.seed!r}")
        if not isinstance(self.max_word_chars, int) or not 1 <= self.max_word_chars <= 4096:
            problems.append(f"max_word_chars must be in [1, 4096], not {self.max_word_chars!r}")
        if not isinstance(self.segmenter_version, str):
            problems.append(f"segmenter_version must be a string, not {self.segmenter_version!r}")
        if self.segmenter not in ("icu", "none"):
            problems.append(f"segmenter must be 'icu' or 'none', not {self.segmenter!r}")
        if self.unicode_tables != TABLE_VERSION:
            problems.append(f"unicode_tables {self.unicode_tables!r} is not the installed {TABLE_VERSION!r}")
        if problems:
            raise TfreeError("invalid codec config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "CodecConfig":
        if not isinstance(d, dict):
            raise TfreeError("invalid codec config: expected a JSON object")
        if type(d.get("format_version")) is not int or d["format_version"] != FORMAT_VERSION:
            raise TfreeError(f"codec config format_version {d.get('format_version')!r} is not supported "
                             f"(this tfree reads {FORMAT_VERSION})")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TfreeError(f"invalid codec config: unknown fields {sorted(unknown)}")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d]
        if missing:  # a file states every field: a default would silently make other patterns
            raise TfreeError(f"invalid codec config: missing fields {missing}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "CodecConfig":
        try:
            d = json.loads(s)
        except ValueError as e:
            raise TfreeError(f"codec config is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON: equal fingerprints mean identical patterns for identical text."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> None:
        atomic_write(path, (self.to_json() + "\n").encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CodecConfig":
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise TfreeError(f"cannot read codec config {os.fspath(path)!r}: {e}") from None
        try:
            return cls.from_json(text)
        except TfreeError as e:
            raise TfreeError(f"{os.fspath(path)}: {e}") from None


_UMASK = os.umask(0)  # read once, at import (single-threaded), and put back
os.umask(_UMASK)


def default_mode(directory: bool = False) -> int:
    """The permissions a plain ``open`` (or, for a directory, ``os.mkdir``) gives under this process's umask:
    what tfree's files and folders get, where ``mkstemp`` and ``mkdtemp`` would make them owner-only."""
    return (0o777 if directory else 0o666) & ~_UMASK


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it over, so readers never see half a file. The file
    gets the permissions a plain ``open`` would give it (mkstemp's are owner-only)."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not e.filename:  # ENOSPC from write or fsync names no file: say which
            raise OSError(e.errno, e.strerror, path) from None
        raise


def from_interrupt(e: BaseException) -> bool:
    """Whether ``e`` is, or was caused by, a KeyboardInterrupt (Ctrl-C that landed while a numba kernel returned
    surfaces as SystemError "... returned a result with an exception set", the interrupt as its cause)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def plain_interrupts():
    """Within: such a SystemError is raised as the KeyboardInterrupt any caller of a library expects. Also a
    decorator."""
    try:
        yield
    except SystemError as e:
        if not from_interrupt(e):
            raise
        raise KeyboardInterrupt from None


def file_sha256(path: str) -> str:
    """The sha256 of a file, read in 4 MB pieces: what manifests and checkpoint.json record of every file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
