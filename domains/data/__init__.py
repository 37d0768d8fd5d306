"""A hospital's imaging data: reading its sources, publishing them privately, and what outsiders see.

:mod:`~domains.data.formats` reads npz, image folders and DICOM into one :class:`ImageSet`;
:mod:`~domains.data.publish` puts a set on the datasite as a private asset with a generated
:mod:`~domains.data.mock` and the public :mod:`~domains.data.metadata` block; the training
:mod:`~domains.data.store` keeps the site's private local copy. :mod:`~domains.data.phantom`
draws the default synthetic chest X-rays and :mod:`~domains.data.partition` simulates N
hospitals from one public dataset.

Names are imported on first use (:mod:`domains.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domains.lazy import lazy_exports

if TYPE_CHECKING:
    from domains.data.formats import ImageSet, load_source
    from domains.data.metadata import datasite_metadata, parse_metadata
    from domains.data.mock import make_mock
    from domains.data.partition import (
        Partition,
        ShardSpec,
        parse_partition,
        parse_shard,
        shard,
        shard_indices,
    )
    from domains.data.phantom import generate_chest_phantoms
    from domains.data.publish import PublishRequest, PublishResult, publish

__all__, __getattr__, __dir__ = lazy_exports("domains.data", {
    "ImageSet": "domains.data.formats",
    "load_source": "domains.data.formats",
    "datasite_metadata": "domains.data.metadata",
    "parse_metadata": "domains.data.metadata",
    "make_mock": "domains.data.mock",
    "Partition": "domains.data.partition",
    "ShardSpec": "domains.data.partition",
    "parse_partition": "domains.data.partition",
    "parse_shard": "domains.data.partition",
    "shard": "domains.data.partition",
    "shard_indices": "domains.data.partition",
    "generate_chest_phantoms": "domains.data.phantom",
    "PublishRequest": "domains.data.publish",
    "PublishResult": "domains.data.publish",
    "publish": "domains.data.publish",
})
