"""Dataset manifests: one JSON line per audio file with its length, rate, channels and metadata.

``yuefu data index DIR`` walks a folder of audio (wav, flac, mp3, ogg, opus, aiff), reads each file's header and its
JSON sidecar, and writes ``DIR/manifest.jsonl``. A file that cannot be read is left out and reported with the
reason; indexing never stops on one bad file. Paths in a manifest are relative to the manifest's folder when the
audio lies under it (so the folder can move), absolute otherwise.

The train/valid split is by file and deterministic: a file is in the valid set when the hash of its relative path
falls under ``valid_fraction``, so it stays there as files are added or removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yuefu import audio
from yuefu.data.sidecar import MusicInfo, SidecarError, parse_info, read_sidecar
from yuefu.errors import AudioFileError, InvalidArgumentError

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif")
MANIFEST_NAME = "manifest.jsonl"


@dataclass
class AudioEntry:
    """One audio file of a dataset."""

    path: Path  # absolute
    duration: float  # seconds
    sample_rate: int
    channels: int
    info: MusicInfo = field(default_factory=MusicInfo)

    def to_json(self, root: Path | None) -> dict[str, Any]:
        path = self.path
        if root is not None:
            try:
                path = self.path.relative_to(root)
            except ValueError:
                pass
        return {"path": path.as_posix(), "duration": round(self.duration, 6), "sample_rate": self.sample_rate,
                "channels": self.channels, **self.info.to_dict()}

    def relative_name(self, root: Path | None) -> str:
        return str(self.to_json(root)["path"])


@dataclass
class IndexResult:
    entries: list[AudioEntry]
    skipped: list[tuple[Path, str]]  # (file, reason)


def find_audio(folder: Path) -> list[Path]:
    """Audio files under ``folder``, sorted, hidden files and folders excluded."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                out.append(Path(dirpath) / name)
    return out


def probe(path: Path) -> AudioEntry:
    """Header, a short decode and the sidecar of one file; AudioFileError or SidecarError when unusable."""
    meta = audio.info(path)
    if meta.frames <= 0:
        raise AudioFileError(f"cannot read '{path}': it contains no audio samples")
    _check_decodes(path)
    return AudioEntry(path=path.resolve(), duration=meta.duration, sample_rate=meta.sample_rate,
                      channels=meta.channels, info=read_sidecar(path))


def _check_decodes(path: Path, frames: int = 2048) -> None:
    """Decode the first samples: catches files whose header is fine but whose data is not."""
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            f.read(frames, dtype="float32")
    except sf.SoundFileError:
        audio.read(path)  # not a soundfile format: PyAV decodes it whole, or raises the one-line error
    except (RuntimeError, ValueError) as e:
        raise AudioFileError(f"cannot read '{path}': {str(e).splitlines()[0]}") from None


def index_folder(folder: str | os.PathLike, progress: Callable[[Iterable], Iterable] | None = None) -> IndexResult:
    """Probe every audio file under ``folder``; unreadable files are skipped with their reason."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InvalidArgumentError(f"{folder}: not a folder")
    files = find_audio(folder)
    entries, skipped = [], []
    for path in progress(files) if progress else files:
        try:
            entries.append(probe(path))
        except (AudioFileError, SidecarError) as e:
            skipped.append((path, _reason(str(e), path)))
    return IndexResult(entries, skipped)


def _reason(message: str, path: Path) -> str:
    """The error message without the leading "cannot read 'PATH':" that the report already shows."""
    prefix = f"cannot read '{path}': "
    return message[len(prefix):] if message.startswith(prefix) else message


def write_manifest(entries: list[AudioEntry], path: str | os.PathLike) -> Path:
    """Write a JSONL manifest atomically (temporary file, then rename)."""
    path = Path(path).expanduser()
    root = path.parent.resolve()
    lines = [json.dumps(e.to_json(root), ensure_ascii=False) for e in entries]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(path: str | os.PathLike) -> list[AudioEntry]:
    """Entries of a JSONL manifest; InvalidArgumentError (naming the line) for a malformed one."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidArgumentError(f"manifest {path}: cannot read it ({e.strerror})") from None
    root = path.parent.resolve()
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"manifest {path.name} line {n}"
        try:
            d = json.loads(line)
            file = Path(d["path"])
            entries.append(AudioEntry(path=file if file.is_absolute() else root / file, duration=float(d["duration"]),
                                      sample_rate=int(d["sample_rate"]), channels=int(d.get("channels", 1)),
                                      info=parse_info(d, where)))
        except SidecarError as e:
            raise InvalidArgumentError(str(e)) from None
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidArgumentError(f"{where}: expected a JSON object with path, duration and sample_rate "
                                       f"({e.__class__.__name__}: {e})") from None
    return entries


def load_entries(source: str | os.PathLike, report: Callable[[str], None] = print) -> tuple[list[AudioEntry], Path]:
    """Entries of a manifest file, or of a folder (its ``manifest.jsonl`` if present, else indexed now).

    Returns the entries and the root that split hashes are taken relative to.
    """
    source = Path(source).expanduser()
    if source.is_file():
        return read_manifest(source), source.parent.resolve()
    if source.is_dir():
        if (source / MANIFEST_NAME).is_file():
            return read_manifest(source / MANIFEST_NAME), source.resolve()
        result = index_folder(source)
        for file, reason in result.skipped:
            report(f"skipped {file}: {reason}")
        return result.entries, source.resolve()
    raise InvalidArgumentError(f"data path {source}: no such file or folder")


def split_entries(entries: list[AudioEntry], root: Path | None, valid_fraction: float,
                  seed: int = 0) -> tuple[list[AudioEntry], list[AudioEntry]]:
    """Deterministic (train, valid) split by file: the valid set holds the files whose path hash < fraction."""
    if valid_fraction <= 0:
        return list(entries), []
    scored = [(_unit_hash(f"{seed}:{e.relative_name(root)}"), e) for e in entries]
    valid = [e for u, e in scored if u < valid_fraction]
    if not valid and len(entries) >= 2:  # a tiny dataset: still keep one file for validation
        valid = [min(scored, key=lambda ue: ue[0])[1]]
    valid_ids = {id(e) for e in valid}
    train = [e for e in entries if id(e) not in valid_ids]
    if not train:
        train, valid = valid, []
    return train, valid


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big") / 2**64
