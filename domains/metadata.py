"""The public metadata block inside a dataset's description: a contract both sides read.

Publish writes it; a scientist's orchestrator reads it to size a model (channels,
classes, image size) without any private data. It is the one ``domains`` module
the orchestrator imports besides the shared training types.
"""

from __future__ import annotations

import json
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
