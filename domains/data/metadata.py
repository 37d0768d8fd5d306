"""Public metadata both sides read: a datasite's own, and the block in a dataset's description.

Publish writes the dataset block; a scientist's orchestrator reads it to size a
model (channels, classes, image size) without any private data. Both sides probe
a datasite's public ``/api/v2/metadata`` to tell whether it is up. This is the one
``domains`` module the orchestrator imports besides the shared training types.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any

METADATA_MARKER = "medsyft-metadata:"


def format_metadata(meta: dict[str, Any]) -> str:
    return f"{METADATA_MARKER} {json.dumps(meta, sort_keys=True)}"


def parse_metadata(description: Any) -> dict[str, Any]:
    """Read the block back from a description (a string or PySyft's markdown object)."""
    text = description.text if hasattr(description, "text") else str(description)
    _, _, tail = text.partition(METADATA_MARKER)
    try:
        return dict(json.loads(tail.strip().splitlines()[0])) if tail.strip() else {}
    except ValueError:
        return {}


def datasite_metadata(url: str, timeout: float = 2.0, *, context: ssl.SSLContext | None = None
                      ) -> dict[str, Any] | None:
    """The datasite's public metadata, or None when nothing answers at *url*.

    An ``https://`` datasite is verified with *context* (the federation CA, or the datasite's own
    pinned certificate for its admin tools: :class:`domains.shared.tls.TLSClient`); one whose
    certificate does not verify counts as not answering.
    """
    try:
        with urllib.request.urlopen(f"{url}/api/v2/metadata", timeout=timeout,  # noqa: S310
                                    context=context) as resp:
            return dict(json.loads(resp.read()))
    except (OSError, ValueError):
        return None
