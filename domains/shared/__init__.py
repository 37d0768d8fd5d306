"""The torch-free values both rooms share: what a hospital and a data scientist exchange and store.

``domains/`` is what a hospital runs and ``orchestrator/`` what a data scientist runs; the values
that cross between them live here, so that both can import them without torch and without the
orchestrator's room ever being imported by a datasite.

- the job as approved: :class:`JobSpec`, :class:`HESpec`, :class:`TrainConfig`, :class:`DPTraining`
  (:mod:`domains.shared.spec`)
- the metric counts a site releases and how they pool: the :class:`Counts` protocol, each task's
  counts type (:data:`COUNTS`, :func:`counts_type`), classification's :class:`EvalResult`,
  :func:`pool`, :func:`histogram_auc` (:mod:`domains.shared.counts`)
- the server optimizers' step, taken by the orchestrator (plaintext) or by every site (under HE):
  :class:`ServerStep`, :class:`ServerState`, :func:`server_update` (:mod:`domains.shared.server_step`)
- :class:`PlainModel` - a plaintext model: one float32 vector and the layout that names its pieces
- :class:`SignedRound` - a roster job's global model: the signed parts of one call and recoveries
- :mod:`domains.shared.codec` - the one stored and one wire form of every value kind: plaintext
  models, :class:`privacy.he.EncryptedVector`, :class:`privacy.secagg_messages.SignedPart` and
  :class:`SignedRound` (``encode``/``decode``, ``to_wire``/``from_wire``, ``to_npz``/``from_npz``)
- :mod:`domains.shared.release_files` - the files of a released model's folder, which the
  orchestrator writes and a hospital's ``medsyft predict`` reads
- errors: :class:`CodecError`, :class:`TrainingError`, :class:`TrainConfigError`

Names are imported on first use (:mod:`domains.lazy`), so importing :mod:`domains.shared.errors`
stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domains.lazy import lazy_exports

if TYPE_CHECKING:
    from domains.shared.codec import Stored, decode, encode, from_npz, from_wire, read_npz, to_npz, to_wire
    from domains.shared.counts import BINS, COUNTS, Counts, EvalResult, counts_type, histogram_auc, pool
    from domains.shared.errors import CodecError, TrainConfigError, TrainingError
    from domains.shared.plain_model import Layout, PlainModel
    from domains.shared.server_step import ServerState, ServerStep, server_update
    from domains.shared.signed_round import SignedRound
    from domains.shared.spec import OPTIMIZERS, DPTraining, HESpec, JobSpec, TrainConfig

_MODULES = {
    "codec": ["Stored", "decode", "encode", "from_npz", "from_wire", "read_npz", "to_npz", "to_wire"],
    "counts": ["BINS", "COUNTS", "Counts", "EvalResult", "counts_type", "histogram_auc", "pool"],
    "errors": ["CodecError", "TrainConfigError", "TrainingError"],
    "plain_model": ["Layout", "PlainModel"],
    "server_step": ["ServerState", "ServerStep", "server_update"],
    "signed_round": ["SignedRound"],
    "spec": ["OPTIMIZERS", "DPTraining", "HESpec", "JobSpec", "TrainConfig"],
}

__all__, __getattr__, __dir__ = lazy_exports(
    "domains.shared",
    {name: f"domains.shared.{module}" for module, names in _MODULES.items() for name in names},
)
