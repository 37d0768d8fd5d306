"""Label schemas of the 2D MedMNIST v2 sets, so a bare ``.npz`` publishes with real names.

The npz files carry only integer labels; the names, task and modality live in the
``medmnist`` package (``medmnist/info.py``, ``INFO[...]["label"]``), copied here so that
publishing needs neither that package nor a download. Files are matched by stem, with or
without the size suffix of MedMNIST+ (``pneumoniamnist_224.npz``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MedMNISTInfo:
    """What the MedMNIST authors say about one 2D set.

    Attributes:
        label_names: names in index order (the ``label`` table of ``medmnist/info.py``).
        task: ``"multi-class"``, ``"binary-class"``, ``"multi-label"`` or ``"ordinal"``.
        modality: imaging modality, for metadata.
        channels: 1 (grey) or 3 (colour) as distributed.
    """

    label_names: tuple[str, ...]
    task: str
    modality: str
    channels: int

    @property
    def multi_label(self) -> bool:
        return self.task == "multi-label"


_ORGANS = (
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
    "liver", "lung-left", "lung-right", "pancreas", "spleen",
)  # fmt: skip

MEDMNIST_2D: dict[str, MedMNISTInfo] = {
    "pathmnist": MedMNISTInfo(
        (
            "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
            "normal colon mucosa", "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
        "multi-class", "colon pathology (H&E)", 3,
    ),
    "chestmnist": MedMNISTInfo(
        (
            "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
            "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
            "pleural", "hernia",
        ),
        "multi-label", "chest X-ray", 1,
    ),
    "dermamnist": MedMNISTInfo(
        (
            "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
            "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
            "vascular lesions",
        ),
        "multi-class", "dermatoscope", 3,
    ),
    "octmnist": MedMNISTInfo(
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        "multi-class", "retinal OCT", 1,
    ),
    "pneumoniamnist": MedMNISTInfo(("normal", "pneumonia"), "binary-class", "chest X-ray", 1),
    "retinamnist": MedMNISTInfo(("0", "1", "2", "3", "4"), "ordinal", "fundus camera", 3),
    "breastmnist": MedMNISTInfo(("malignant", "normal, benign"), "binary-class", "ultrasound", 1),
    "bloodmnist": MedMNISTInfo(
        (
            "basophil", "eosinophil", "erythroblast",
            "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
            "lymphocyte", "monocyte", "neutrophil", "platelet",
        ),
        "multi-class", "blood cell microscope", 3,
    ),
    "tissuemnist": MedMNISTInfo(
        (
            "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
            "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
            "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb",
        ),
        "multi-class", "kidney cortex microscope", 1,
    ),
    "organamnist": MedMNISTInfo(_ORGANS, "multi-class", "abdominal CT (axial)", 1),
    "organcmnist": MedMNISTInfo(_ORGANS, "multi-class", "abdominal CT (coronal)", 1),
    "organsmnist": MedMNISTInfo(_ORGANS, "multi-class", "abdominal CT (sagittal)", 1),
}  # fmt: skip

_SIZE_SUFFIX = re.compile(r"_(28|64|128|224)$")


def lookup(path: Path) -> MedMNISTInfo | None:
    """The table entry for ``path`` by file stem, or ``None`` for a non-MedMNIST file.

    >>> lookup(Path("data/pneumoniamnist_224.npz")).label_names
    ('normal', 'pneumonia')
    >>> lookup(Path("mine.npz")) is None
    True
    """
    stem = _SIZE_SUFFIX.sub("", path.stem.lower())
    return MEDMNIST_2D.get(stem)
