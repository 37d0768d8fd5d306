"""Source formats a hospital can publish from, all loaded into one :class:`ImageSet`.

Start at :func:`load_source`: it detects the format (``npz``, ``folder``, ``dicom``),
validates every image and label, and returns the set only when all of it is publishable.
What a source may declare (image pixels, npz sizes) is bounded by :class:`SourceLimits`.
"""

from domains.data.formats.harmonize import harmonize, harmonize_batch, preprocess_image
from domains.data.formats.imageset import ImageSet, publish_error
from domains.data.formats.labels import LabelNames, parse_label_names
from domains.data.formats.limits import SourceLimits, parse_size
from domains.data.formats.medmnist_info import MEDMNIST_2D, MedMNISTInfo
from domains.data.formats.registry import (
    FORMATS,
    Loader,
    detect_format,
    load_source,
    register_format,
)

__all__ = [
    "FORMATS",
    "MEDMNIST_2D",
    "ImageSet",
    "LabelNames",
    "Loader",
    "MedMNISTInfo",
    "SourceLimits",
    "detect_format",
    "harmonize",
    "harmonize_batch",
    "load_source",
    "parse_label_names",
    "parse_size",
    "preprocess_image",
    "publish_error",
    "register_format",
]
