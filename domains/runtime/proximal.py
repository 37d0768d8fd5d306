"""FedProx's proximal term (Li et al. 2020), as a datasite's local training applies it.

Each site minimises its own loss plus (μ/2)·||w − w_global||², where ``w_global`` is the model
the site was sent at the start of the call. On data that differs between hospitals, the pull
keeps each site's model near the global one, so that local epochs do not drift apart.

Without DP the term is added to the loss and autograd differentiates it. Under DP-SGD it must
not be: Opacus's ``DPOptimizer.add_noise`` sets ``p.grad`` to the noised sum of the clipped
per-sample gradients (``p.summed_grad``, built from ``p.grad_sample``), replacing whatever
``backward()`` left in ``p.grad``. A term of the loss that is not computed per sample never
reaches ``p.grad_sample`` (the per-sample hooks see layer inputs and outputs, not a penalty on
the parameters), so Opacus would drop it without a word. :func:`dp_step` adds its gradient
μ(w − w_global) to the privatized gradient instead, after clipping, noise and scaling.

That is exact and costs no ε. It is the gradient that the loss term would contribute, the
same one non-DP training uses; and it is a function of the current weights (themselves the
output of earlier privatized steps) and of the global model the orchestrator sent, never of a
private image. Adding it is post-processing of the Gaussian mechanism's output, so the
accountant's entry for the step (recorded by Opacus's step hook inside ``pre_step``) is the
same with μ > 0 as with μ = 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ProximalTerm:
    """(μ/2)·||w − w_global||² over the trainable parameters, against a frozen copy of them.

    Args:
        model: the model as the site received it; its trainable parameters are copied now,
            detached, so the anchor never moves and takes no gradient.
        mu: μ > 0 (μ = 0 means no term: callers then build none, so training is unchanged).
    """

    def __init__(self, model: nn.Module, *, mu: float) -> None:
        self.mu = float(mu)
        self._pairs = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]

    @classmethod
    def of(cls, model: nn.Module, *, mu: float) -> ProximalTerm | None:
        """The term for *mu*, or None for μ = 0, which leaves training bit for bit as without it.

        >>> ProximalTerm.of(nn.Linear(2, 1), mu=0.0) is None
        True
        >>> float(ProximalTerm.of(nn.Linear(2, 1), mu=0.5).penalty())  # w is still w_global
        0.0
        """
        return cls(model, mu=mu) if mu > 0 else None

    def penalty(self) -> torch.Tensor:
        """The term itself, to add to the loss of non-DP training."""
        total = sum(((p - anchor) ** 2).sum() for p, anchor in self._pairs)
        return 0.5 * self.mu * torch.as_tensor(total)

    def add_gradient(self) -> None:
        """Add μ(w − w_global) to every parameter's ``.grad`` (DP: after Opacus privatized it)."""
        with torch.no_grad():
            for p, anchor in self._pairs:
                pull = (p - anchor).mul_(self.mu)
                p.grad = pull if p.grad is None else p.grad.add_(pull)


def dp_step(optimizer: Any, proximal: ProximalTerm | None) -> None:
    """One DP-SGD step of an Opacus ``DPOptimizer``, with FedProx's pull added after privatizing.

    Without a term this is ``optimizer.step()`` itself. With one, it is the same step split
    where Opacus allows it: ``pre_step()`` clips, accumulates, noises, scales and records the
    step for the accountant; it returns False when the step is to be skipped (Opacus's virtual
    steps), and then nothing moves, as in ``DPOptimizer.step``. Otherwise the proximal gradient is
    added to the privatized one and the wrapped optimizer steps.
    """
    if proximal is None:
        optimizer.step()
        return
    if optimizer.pre_step():
        proximal.add_gradient()
        optimizer.original_optimizer.step()
