"""The mathematics both hospitals and the orchestrator trust: DP accounting and HE aggregation.

Public API (imported lazily: the accounting pulls in Opacus and torch, HE pulls in TenSEAL):

- :class:`DPConfig`, :func:`epsilon`, :func:`noise_for_target`, :func:`training_entry`,
  :func:`eval_entry`, :func:`job_history` - Opacus-based accounting (:mod:`privacy.accounting`)
- :func:`init_keys`, :func:`load_context`, :class:`HEContext`, :class:`EncryptedVector`,
  :func:`release_share`, :func:`unmask_release`, :data:`KEY_SCHEME` - BFV encrypted FedAvg
  (:mod:`privacy.he`)
- :func:`init_federation`, :func:`load_roster`, :func:`load_site_kit`, :class:`Roster`,
  :class:`SiteKit` - the key ceremony's roster and each hospital's signing and key-agreement keys
  (:mod:`privacy.ceremony`, :mod:`privacy.roster`)
- :func:`make_part`, :func:`aggregate_round`, :func:`decrypt_round`, :func:`recover_masks`,
  :class:`SignedPart`, :class:`MaskRecovery`, :class:`VerifiedSum` - verifiable, masked secure
  aggregation (:mod:`privacy.secagg`)
- :func:`atomic_write`, :func:`atomic_writer`, :func:`file_lock`, :func:`utc_stamp` - how every
  room writes, locks and time-stamps its files (:mod:`privacy.durable`)
- errors: see :mod:`privacy.errors`
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **{name: "privacy.accounting" for name in (
        "DPConfig", "epsilon", "noise_for_target", "training_entry", "eval_entry", "job_history")},
    **{name: "privacy.he" for name in (
        "init_keys", "load_context", "HEContext", "EncryptedVector", "release_share",
        "unmask_release", "KEY_SCHEME")},
    "init_federation": "privacy.ceremony",
    **{name: "privacy.roster" for name in ("load_roster", "load_site_kit", "Roster", "SiteKit")},
    **{name: "privacy.secagg" for name in (
        "make_part", "aggregate_round", "decrypt_round", "recover_masks", "VerifiedSum")},
    **{name: "privacy.secagg_messages" for name in ("SignedPart", "MaskRecovery")},
    **{name: "privacy.durable" for name in ("atomic_write", "atomic_writer", "file_lock", "utc_stamp")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'privacy' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
