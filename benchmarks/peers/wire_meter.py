"""An NVIDIA FLARE filter that counts a message's serialized bytes (its own module so that NVIDIA
FLARE ships it to the server in the job's custom folder).

Placed on the server after every other filter of its kind: as a task-data filter it sees what
goes to a client (encrypted under HE), as a task-result filter what came back. Appends one JSON
line per message to ``FOLDER/<pid>.jsonl``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nvflare.apis.filter import Filter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import ReservedHeaderKey, Shareable
from nvflare.fuel.utils import fobs


def _ciphertext_bytes(shareable: Shareable) -> int:
    """Bytes of the CKKS vectors alone (``serialize()``), without the context each one carries."""
    try:
        from nvflare.apis.dxo import from_shareable

        data = from_shareable(shareable).data or {}
    except Exception:  # not a DXO (e.g. an error reply): nothing encrypted to count
        return 0
    return sum(len(v.serialize()) for v in data.values() if type(v).__name__ == "CKKSVector")


class WireMeter(Filter):
    def __init__(self, folder: str, direction: str) -> None:
        super().__init__()
        self.folder = folder
        self.direction = direction

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        size = len(fobs.dumps(shareable))
        peer = fl_ctx.get_peer_context()
        row = {"direction": self.direction, "bytes": size, "ciphertext_bytes": _ciphertext_bytes(shareable),
               "task": shareable.get_header(ReservedHeaderKey.TASK_NAME),
               "peer": peer.get_identity_name() if peer is not None else None}
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        with open(os.path.join(self.folder, f"{os.getpid()}.jsonl"), "a") as fh:
            fh.write(json.dumps(row) + "\n")
        return shareable
