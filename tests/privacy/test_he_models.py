"""Encrypted FedAvg of real model weights: flatten, encrypt, add, decrypt, unflatten.

ResNet-18 (MONAI, 11 M parameters) checks that packing handles any model size.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from domains.runtime.models import build_model
from domains.runtime.weights import fedavg, flatten, get_weights, unflatten
from privacy.he import fedavg_tolerance, init_keys, load_context


@pytest.mark.slow
def test_encrypted_fedavg_of_resnet18_equals_plain_fedavg() -> None:
    secret, public, _ = init_keys(tempfile.mkdtemp() + "/keys")
    hospital, orchestrator = load_context(secret), load_context(public)
    models = [get_weights(build_model("resnet18", in_channels=1, num_classes=2, image_size=64, seed=s))
              for s in (1, 2)]
    vectors = [flatten(w)[0] for w in models]
    layout = flatten(models[0])[1]
    assert vectors[0].size > 11_000_000
    sizes = [300, 100]
    shares = [n / sum(sizes) for n in sizes]
    parts = [hospital.encrypt_weighted(v, weight=w, bound=4.0) for v, w in zip(vectors, shares, strict=True)]
    total = orchestrator.aggregate(parts)
    mean = unflatten(hospital.decrypt_mean(total), layout)
    plain = fedavg(list(zip(models, sizes, strict=True)))
    tol = fedavg_tolerance(n_parts=2, scale=total.scale, weight_sum=total.weight_sum, bound=4.0)
    assert max(np.abs(flatten(mean)[0] - flatten(plain)[0]).max(), 0) <= tol
    assert total.nbytes / (4 * vectors[0].size) < 4.0
