"""The files of a released model's folder, ``RUN_DIR/release/``, named once for both rooms.

The orchestrator writes them (:mod:`orchestrator.release`, :mod:`orchestrator.model_card`); a
hospital's ``medsyft predict`` and ``export`` read them (:mod:`domains.inference.artifact`).
"""

RELEASE_DIR = "release"  # inside the run directory
MODEL_FILE = "model.npz"  # the weights by name
CARD_JSON = "model_card.json"  # the model card; its "spec" is the approved job
CARD_MD = "model_card.md"
RELEASE_JSON = "release.json"  # under HE: the release record (its "spec" too)
