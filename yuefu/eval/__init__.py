"""Evaluation of a yuefu model (``yuefu eval``): codec quality, prompt adherence and FAD on held-out renders.

- :mod:`yuefu.eval.features`: log-mel features, the FAD embedding, Fréchet distance;
- :mod:`yuefu.eval.metrics`: SI-SNR and mel distance of a codec reconstruction;
- :mod:`yuefu.eval.classifier`: the instrument-family classifier trained on real renders;
- :mod:`yuefu.eval.tempo`: tempo by librosa beat tracking (``pip install librosa``);
- :mod:`yuefu.eval.key`: key and mode by Krumhansl-Schmuckler;
- :mod:`yuefu.eval.prompt_file`: prompt files of one's own (``yuefu eval --prompt-file``);
- :mod:`yuefu.eval.run`: :func:`evaluate`, the whole evaluation, and its printed table;
- :mod:`yuefu.eval.cli`: the ``yuefu eval`` sub-command.

The submodules load lazily: ``import yuefu.eval`` imports none of them.
"""

from __future__ import annotations

from typing import Any


def evaluate(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`yuefu.eval.run.evaluate`."""
    from yuefu.eval.run import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["evaluate"]
