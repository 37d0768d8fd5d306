"""One round of local training on a datasite's own images: the step every FL strategy repeats.

Images stay uint8 until a batch is drawn, so a large site does not hold a float copy of its
whole dataset; shuffling uses a private ``torch.Generator`` and any other randomness runs
under a forked, seeded global RNG, so the same seed gives the same weights without changing
the caller's random state.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from domains.runtime.augment import augment_batch
from domains.runtime.device import noise_generator, on_device, site_device
from domains.runtime.errors import TrainingError
from domains.runtime.proximal import ProximalTerm, dp_step
from domains.shared.spec import DPTraining, TrainConfig

if TYPE_CHECKING:
    from domains.runtime.tasks.base import Task


@dataclass
class LocalResult:
    """What a site reports after training: aggregates only, nothing per image.

    Attributes:
        n_samples: local images trained on (the FedAvg weight).
        mean_loss: mean training loss over the last epoch (the data's loss, without FedProx's
            proximal term).
        steps: optimizer steps taken over all epochs.
        seconds: wall-clock training time.
        privacy_history: under DP, what Opacus's own accountant recorded for this run, as
            ``(noise_multiplier, sample_rate, steps)`` entries; empty without DP.
    """

    n_samples: int
    mean_loss: float
    steps: int
    seconds: float
    privacy_history: list[tuple[float, float, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for results that cross the datasite boundary as plain data."""
        return asdict(self)


def to_tensor_images(images_uint8: np.ndarray) -> torch.Tensor:
    """Scale ``(N, C, H, W)`` uint8 images to float32 in ``[0, 1]``, the models' input.

    >>> to_tensor_images(np.full((1, 1, 2, 2), 255, np.uint8)).max()
    tensor(1.)
    """
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise TrainingError(
            f"images must be a (N, C, H, W) uint8 array (got {images.dtype} {images.shape}); "
            "use ImageSet.images"
        )
    return torch.from_numpy(images.astype(np.float32)).div_(255.0)


def check_arrays(images: np.ndarray, labels: np.ndarray, *, multi_label: bool) -> None:
    """Refuse images and labels that are not one non-empty set in the ImageSet layout.

    Raises:
        TrainingError: naming the array and the layout it should have.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        raise TrainingError(f"images must be a (N, C, H, W) uint8 array (got {got}); use ImageSet.images")
    labels = np.asarray(labels)
    want_ndim, layout = (2, "(N, K) 0/1") if multi_label else (1, "(N,) integer")
    kind_ok = labels.dtype.kind in "iub" and (multi_label or labels.dtype.kind != "b")
    if labels.ndim != want_ndim or not kind_ok:
        raise TrainingError(
            f"labels must be {layout} for multi_label={multi_label} (got {labels.dtype} {labels.shape}); "
            "pass ImageSet.labels with the set's multi_label flag"
        )
    if len(labels) != len(images) or len(images) == 0:
        raise TrainingError(
            f"need one label per image and at least one image (got {len(images)} images, "
            f"{len(labels)} labels)"
        )


def label_tensor(labels: np.ndarray, *, multi_label: bool) -> torch.Tensor:
    """Targets in the dtype each loss needs: int64 classes, or float32 0/1 for BCE."""
    dtype = np.float32 if multi_label else np.int64
    return torch.from_numpy(np.asarray(labels).astype(dtype))


def check_logits(logits: torch.Tensor, labels: np.ndarray, *, multi_label: bool) -> None:
    """Fail clearly when the model's outputs do not fit the label schema (wrong ``num_classes``)."""
    k = int(logits.shape[1]) if logits.ndim == 2 else -1
    need = int(labels.shape[1]) if multi_label else int(np.max(labels)) + 1
    if k < need or (multi_label and k != need) or int(np.min(labels)) < 0:
        raise TrainingError(
            f"the model outputs {tuple(logits.shape[1:])} logits per image but the labels need "
            f"{need}{'' if multi_label else ' or more'} (labels min {int(np.min(labels))}); "
            "build the model with num_classes equal to the number of label names"
        )


def _check_indices(indices: np.ndarray, n: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.dtype.kind not in "iu" or len(idx) == 0:
        raise TrainingError(f"indices must be a non-empty 1-D integer array (got {idx.dtype} {idx.shape})")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise TrainingError(f"indices must lie in [0, {n}) for {n} images "
                            f"(got {int(idx.min())}..{int(idx.max())})")
    return idx.astype(np.int64, copy=False)


class _Rows:
    """The training images, ``images[indices]`` or all of them, gathered one batch at a time.

    A memory-mapped store stays on disk (in the page cache) except for the batch in hand; a
    read-only array is gathered, never written.
    """

    def __init__(self, images: np.ndarray, indices: np.ndarray | None) -> None:
        self.images = images
        self.indices = indices

    def __len__(self) -> int:
        return len(self.images) if self.indices is None else len(self.indices)

    def batch(self, positions: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        """uint8 images at *positions* (into the training rows), as a new tensor."""
        rows = np.asarray(positions, dtype=np.int64)
        if self.indices is not None:
            rows = self.indices[rows]
        return torch.from_numpy(np.ascontiguousarray(self.images[rows]))


class _RowsDataset(torch.utils.data.Dataset):
    """(image, target) pairs over :class:`_Rows` for Opacus's Poisson loader; ``__getitems__``
    gathers a whole batch in one indexing call instead of one call per image."""

    def __init__(self, rows: _Rows, targets: torch.Tensor) -> None:
        self.rows = rows
        self.targets = targets

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rows.batch([i])[0], self.targets[i]

    def __getitems__(self, positions: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        images = self.rows.batch(positions)
        return [(images[k], self.targets[p]) for k, p in enumerate(positions)]


def train_local(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    config: TrainConfig,
    multi_label: bool = False,
    dp: DPTraining | None = None,
    task: Task | None = None,
    device: torch.device | None = None,
    indices: np.ndarray | None = None,
) -> LocalResult:
    """Train ``model`` in place on one site's images and report aggregates.

    With *indices*, training uses only ``images[indices]`` and ``labels[indices]``, gathered batch
    by batch: a site passes its memory-mapped store and its training split, and never holds a
    copy of the split in memory (:mod:`domains.data.store`).

    Training runs on *device* (default :func:`domains.runtime.device.site_device`: the site's GPU
    when it has one); batches move there one at a time and the model comes back to where it was.

    The loss, the label checks and the targets are the *task*'s (:mod:`domains.runtime.tasks`);
    without one, classification with *multi_label*: cross-entropy for multi-class labels
    ``(N,)``, BCE-with-logits for multi-label ``(N, K)``.
    The model's train/eval mode is restored afterwards, also when training fails.

    With *dp*, training is Opacus DP-SGD: batches are Poisson samples at rate
    ``1 / ceil(N / batch_size)``, per-sample gradients are clipped and noised. Its randomness
    (sampling and noise) comes from the operating system, not from ``config.seed``: a seed the
    scientist knows would let them reproduce, and so subtract, the noise.

    With ``config.proximal_mu`` > 0 (FedProx), training is pulled towards *model* as it is
    passed in, the global model: a frozen copy of it is the anchor. Under DP the pull is added
    after Opacus privatized the gradient, so it costs no ε (:mod:`domains.runtime.proximal`).

    Raises:
        TrainConfigError: for an invalid ``config``.
        TrainingError: for arrays not in the ImageSet layout, labels that do not fit the
            model's outputs, or a loss that becomes NaN or infinite (lower ``lr``).
    """
    config.validate()
    if task is None:
        from domains.runtime.tasks.classification import Classification  # the task imports this module
        task = Classification(multi_label=multi_label, class_weights=config.class_weights)
    if indices is None:
        task.check_data(images, labels)
    else:
        indices = _check_indices(indices, len(images))
        labels = np.asarray(labels)[indices]
        task.check_data(images[indices[:1]], labels[:1])  # the layout, on one gathered image
    pixels = _Rows(images, indices)
    targets = task.targets(labels)
    device = site_device() if device is None else device
    was_training, start = model.training, time.perf_counter()
    model.train()
    try:
        with torch.random.fork_rng(devices=[]), on_device(model, device, private=dp is not None):
            if dp is None:
                torch.manual_seed(config.seed)  # dropout and other random layers, if any
                mean_loss, steps = _run_epochs(model, pixels, targets, labels, config, task, device)
                history: list[tuple[float, float, int]] = []
            else:
                dp.validate()
                torch.manual_seed(secrets.randbits(63))
                mean_loss, steps, history = _run_dp_epochs(model, pixels, targets, labels, config,
                                                           task, dp, device)
    finally:
        model.train(was_training)
    return LocalResult(
        n_samples=len(pixels), mean_loss=mean_loss, steps=steps, seconds=time.perf_counter() - start,
        privacy_history=history,
    )


def _run_epochs(
    model: nn.Module,
    pixels: _Rows,
    targets: torch.Tensor,
    labels: np.ndarray,
    config: TrainConfig,
    task: Task,
    device: torch.device,
) -> tuple[float, int]:
    """The training loop; returns the last epoch's mean loss and the number of steps."""
    loss_fn = task.loss()
    optimizer = _optimizer(model, config)
    proximal = ProximalTerm.of(model, mu=config.proximal_mu)
    shuffle = torch.Generator().manual_seed(config.seed)
    warps = torch.Generator().manual_seed(config.seed + _WARP_SEED_OFFSET)  # apart from the shuffle
    n, steps, epoch_loss = len(pixels), 0, torch.zeros((), dtype=torch.float64, device=device)
    k = config.augment_multiplicity
    for epoch in range(config.epochs):
        epoch_loss.zero_()
        for idx in torch.randperm(n, generator=shuffle).split(config.batch_size):
            batch = pixels.batch(idx).to(device, non_blocking=True).float().div_(255.0)
            logits = model(augment_batch(_copies(batch, k), config.augment, warps))
            if steps == 0:
                task.check_outputs(logits, labels)
            # the mean over k warps of every image: the same gradient as under DP before clipping
            loss = loss_fn(logits, _copies(targets[idx].to(device, non_blocking=True), k))
            optimizer.zero_grad(set_to_none=True)
            (loss if proximal is None else loss + proximal.penalty()).backward()
            optimizer.step()
            epoch_loss += loss.detach() * len(idx)  # no .item(): no sync per batch
            steps += 1
        if not torch.isfinite(epoch_loss):  # checked per epoch, not per batch, to stay cheap
            raise TrainingError(
                f"training loss became {float(epoch_loss)} in epoch {epoch + 1}; lower lr "
                "(the model's weights are now unusable: load the global weights again)"
            )
    return float(epoch_loss) / n, steps


_WARP_SEED_OFFSET = 0x5EED  # plain training's warps: repeatable from the seed, not the shuffle's stream


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _copies(batch: torch.Tensor, k: int) -> torch.Tensor:
    """Every row of *batch* *k* times in a row (row i's copies at i·k .. i·k + k − 1)."""
    return batch if k == 1 else batch.repeat_interleave(k, dim=0)


def mean_over_copies(module: nn.Module, k: int) -> None:
    """Average each parameter's per-sample gradients (Opacus's ``grad_sample``) over the *k*
    consecutive copies of every image, so that Opacus clips one gradient per image.

    Opacus's per-sample gradient of row j is the gradient of row j's own loss (its hooks undo the
    batch mean), so the mean over an image's *k* rows is the gradient of that image's mean loss
    over its *k* warps, a function of that image alone.
    """
    def mean(grad_sample: torch.Tensor) -> torch.Tensor:
        return grad_sample.view(-1, k, *grad_sample.shape[1:]).mean(dim=1)

    for param in module.parameters():
        grad_sample = getattr(param, "grad_sample", None)
        if isinstance(grad_sample, list):  # one tensor per accumulated physical batch
            param.grad_sample = [mean(g) for g in grad_sample]  # type: ignore[attr-defined]
        elif grad_sample is not None:
            param.grad_sample = mean(grad_sample)  # type: ignore[attr-defined]


def _run_dp_epochs(
    model: nn.Module,
    pixels: _Rows,
    targets: torch.Tensor,
    labels: np.ndarray,
    config: TrainConfig,
    task: Task,
    dp: DPTraining,
    device: torch.device,
) -> tuple[float, int, list[tuple[float, float, int]]]:
    """Opacus DP-SGD over ``config.epochs``; returns mean loss, steps and Opacus's history."""
    import warnings

    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader

    loss_fn = task.loss()
    loader = DataLoader(_RowsDataset(pixels, targets), batch_size=config.batch_size)
    proximal = ProximalTerm.of(model, mu=config.proximal_mu)  # anchored before any step
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")  # OS-seeded, see train_local
        engine = PrivacyEngine(accountant="rdp")
        private, optimizer, private_loader = engine.make_private(
            module=model, optimizer=_optimizer(model, config), data_loader=loader,
            noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
            poisson_sampling=True,
            noise_generator=noise_generator(device),  # Opacus draws the noise where the gradients are
        )
    steps, epoch_loss, seen = 0, torch.zeros((), dtype=torch.float64, device=device), 0
    try:
        with warnings.catch_warnings():
            # uint8 inputs need no gradient, so torch notes the first layer's hook fires on outputs
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            steps, seen = _dp_loop(private, optimizer, private_loader, loss_fn, labels, config,
                                   task, epoch_loss, proximal, device)
    finally:
        private.remove_hooks() if hasattr(private, "remove_hooks") else None
    history = [(float(s), float(q), int(k)) for s, q, k in engine.accountant.history]
    return float(epoch_loss) / max(1, seen), steps, history


def _dp_loop(private: nn.Module, optimizer: Any, loader: Any, loss_fn: nn.Module, labels: np.ndarray,
             config: TrainConfig, task: Task, epoch_loss: torch.Tensor,
             proximal: ProximalTerm | None, device: torch.device) -> tuple[int, int]:
    """The DP-SGD loop; fills *epoch_loss* with the last epoch's summed loss.

    FedProx's term never enters the loss here: Opacus would drop it (see :func:`dp_step`).
    """
    steps = seen = 0
    warps = torch.Generator().manual_seed(secrets.randbits(63))  # like the noise: not from the seed
    k = config.augment_multiplicity
    for epoch in range(config.epochs):
        epoch_loss.zero_()
        seen = 0
        for cpu_pixels, cpu_targets in loader:
            batch_pixels = cpu_pixels.to(device, non_blocking=True)
            batch_targets = cpu_targets.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            inputs = _copies(batch_pixels.float().div_(255.0), k)
            logits = private(augment_batch(inputs, config.augment, warps))
            if len(batch_pixels) == 0:  # Poisson sampling drew no image: the step adds noise only
                logits.sum().backward()
                dp_step(optimizer, proximal)
                steps += 1
                continue
            if seen == 0:
                task.check_outputs(logits, labels)
            loss = loss_fn(logits, _copies(batch_targets, k))
            loss.backward()
            if k > 1:
                mean_over_copies(private, k)  # one gradient per image, then Opacus clips it
            dp_step(optimizer, proximal)
            epoch_loss += loss.detach() * len(batch_pixels)
            seen += len(batch_pixels)
            steps += 1
        if not torch.isfinite(epoch_loss):
            raise TrainingError(
                f"training loss became {float(epoch_loss)} in epoch {epoch + 1}; lower lr"
            )
    return steps, seen
