"""Load torch pickle checkpoints (``.pt``, ``.th``, ``.bin``) without running code from the file.

A pickle can call any Python function while it loads: ``torch.load(path)`` on a downloaded checkpoint is
arbitrary code execution. :func:`load_torch_pickle` loads with ``weights_only=True``, torch's restricted
unpickler, which builds only tensors, plain containers (dict, list, tuple, OrderedDict) and scalars (str, int,
float, bool, None) and refuses everything else before calling it. That covers what yuefu reads: audiocraft's
exported ``state_dict.bin`` / ``compression_state_dict.bin`` (``best_state``, ``xp.cfg`` as a YAML string,
``version``, ``exported``) and transformers' ``pytorch_model.bin``.

No extra types are allowlisted (no ``torch.serialization.add_safe_globals``, which would change torch's
behaviour for the whole process): numpy scalars and arrays, OmegaConf configs (audiocraft's training checkpoints,
as opposed to exported ones) and any other object are refused. A caller that trusts a file and needs such a type
can wrap the call in ``torch.serialization.safe_globals([...])``.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from yuefu.errors import CheckpointError

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format since torch 1.6: a zip archive


def load_torch_pickle(path: str | os.PathLike) -> Any:
    """Load a checkpoint saved with ``torch.save`` (zip or legacy format) onto the CPU, executing no code.

    Zip-format files are memory-mapped, so a multi-GB state dict is read from the page cache as it is used
    rather than copied into memory up front. Raises CheckpointError (one line) when the file is missing, is
    truncated or corrupt, or is refused because it holds code or objects other than tensors and containers.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: '{path}'")
    if path.is_dir():
        raise CheckpointError(f"cannot load checkpoint '{path}': it is a folder, not a file")
    try:
        with open(path, "rb") as f:
            is_zip = f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
        with warnings.catch_warnings():
            # torch.load warns about e.g. pickle protocols it did not write; the outcome is what matters here.
            warnings.filterwarnings("ignore", module=r"torch(\.|$)")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        refused, reason = _explain_refusal(str(e))
        if refused:
            raise CheckpointError(
                f"refused to load checkpoint '{path}': the file contains code or objects that are not plain "
                f"tensors/containers ({reason})"
            ) from None  # torch's message is a page long; the reason above is its gist
        raise CheckpointError(
            f"cannot load checkpoint '{path}': not a torch checkpoint, or truncated or corrupt ({reason})"
        ) from None
    except (PermissionError, FileNotFoundError, IsADirectoryError) as e:
        raise CheckpointError(f"cannot load checkpoint '{path}': {e.strerror or e}") from e
    except RuntimeError as e:
        if "TorchScript" in str(e):
            raise CheckpointError(
                f"refused to load checkpoint '{path}': the file contains code or objects that are not plain "
                f"tensors/containers (a TorchScript archive holds code)"
            ) from None
        raise CheckpointError(f"cannot load checkpoint '{path}': the file is truncated or corrupt ({_gist(e)})") from e
    except Exception as e:  # EOFError, OSError(EINVAL), ValueError, ... from reading damaged bytes
        raise CheckpointError(f"cannot load checkpoint '{path}': the file is truncated or corrupt ({_gist(e)})") from e


# What torch's weights-only unpickler says when it stops at something it will not build or call, and the short
# reason we give for it. Anything else it stops at (an opcode it does not know, a truncated stream) means the
# bytes are not a checkpoint it can read, not that they tried to do something.
_REFUSALS = (
    (re.compile(r"GLOBAL (\S+) was not an allowed global"), "it references {}"),
    (re.compile(r"unsupported GLOBAL (\S+) whose module"), "it references {}"),
    (re.compile(r"call reduce for unrecognized function (.+?)(?: which belongs| *$)", re.M), "it calls {}"),
    (re.compile(r"Can only (?:build|create new object for) .*? but got (.+)"), "it builds {}"),
    (re.compile(r"(\S+) must be imported to load (.+)"), "it holds {1}"),
)


def _explain_refusal(message: str) -> tuple[bool, str]:
    """(refused for safety?, short reason) from torch's weights-only UnpicklingError message."""
    for pattern, reason in _REFUSALS:
        match = pattern.search(message)
        if match:
            return True, reason.format(*match.groups()).strip().rstrip(".")
    match = re.search(r"Unsupported operand (\d+)", message)
    if match:
        return False, f"pickle opcode {match.group(1)} is not supported by the safe loader"
    core = message.split("WeightsUnpickler error:")[-1].split("Check the documentation of torch.load")[0]
    return False, _gist(core)


def _gist(error: BaseException | str, limit: int = 120) -> str:
    """The first sentence of an error message, on one line and at most ``limit`` characters."""
    text = str(error).strip()
    if not text and isinstance(error, BaseException):
        text = "unexpected end of file" if isinstance(error, EOFError) else type(error).__name__
    first = text.splitlines()[0] if text else ""
    first = re.split(r"(?<=[a-z0-9])\. ", first)[0].rstrip(".")
    return first if len(first) <= limit else first[: limit - 3] + "..."
