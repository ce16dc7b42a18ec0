"""EnCodec's loss balancer: the weights say what share of the gradient each loss contributes, whatever its scale.

For losses l_i of the model output y, the gradient sent back into the model is

    G = sum_i  w_i / sum(w) * total_norm * g_i / avg(||g_i||),   g_i = d l_i / d y,

with avg a bias-corrected exponential moving average of the gradient norms (per batch item, averaged), kept the
same on every process. With ``balance_grads: false`` it is the plain weighted sum. Follows audiocraft's
``losses/balancer.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, autograd


class Balancer:
    def __init__(self, weights: dict[str, float], balance_grads: bool = True, total_norm: float = 1.0,
                 ema_decay: float = 0.999, per_batch_item: bool = True, epsilon: float = 1e-12,
                 all_reduce_mean: Callable[[Tensor], Tensor] | None = None):
        self.weights = {k: w for k, w in weights.items() if w > 0}
        self.balance_grads, self.total_norm = balance_grads, total_norm or 1.0
        self.decay, self.per_batch_item, self.epsilon = ema_decay, per_batch_item, epsilon
        self.all_reduce_mean = all_reduce_mean  # averages norms over processes (None: single process)
        self.total: dict[str, float] = {}
        self.fix: dict[str, float] = {}
        self.metrics: dict[str, float] = {}

    def _average(self, norms: dict[str, float]) -> dict[str, float]:
        for k, v in norms.items():
            self.total[k] = self.total.get(k, 0.0) * self.decay + v
            self.fix[k] = self.fix.get(k, 0.0) * self.decay + 1.0
        return {k: self.total[k] / self.fix[k] for k in norms}

    def gradient(self, losses: dict[str, Tensor], output: Tensor) -> tuple[Tensor, Tensor]:
        """The balanced gradient with respect to ``output`` (to backpropagate) and the effective loss (to log)."""
        losses = {k: v for k, v in losses.items() if k in self.weights}
        grads, norms = {}, {}
        for name, loss in losses.items():
            (grad,) = autograd.grad(loss, [output], retain_graph=True)
            if self.per_batch_item:
                norm = grad.flatten(1).norm(dim=1).mean()
            else:
                norm = grad.norm()
            grads[name], norms[name] = grad, norm
        stacked = torch.stack(list(norms.values())).detach().float()
        if self.all_reduce_mean is not None:
            stacked = self.all_reduce_mean(stacked)
        avg = self._average(dict(zip(norms, stacked.tolist())))
        total_avg = sum(avg.values())
        self.metrics = {f"ratio_{k}": v / total_avg for k, v in avg.items()} if total_avg > 0 else {}
        sum_w = sum(self.weights[k] for k in losses)
        out = torch.zeros_like(output)
        effective = output.new_zeros((), dtype=torch.float32)
        for name in losses:
            if self.balance_grads:
                scale = self.weights[name] / sum_w * self.total_norm / (self.epsilon + avg[name])
            else:
                scale = self.weights[name]
            out.add_(grads[name], alpha=scale)
            effective = effective + scale * losses[name].detach().float()
        return out, effective

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"total": dict(self.total), "fix": dict(self.fix)}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        self.total, self.fix = dict(state["total"]), dict(state["fix"])
