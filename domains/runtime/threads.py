"""How many CPU threads torch may use for training and evaluation.

Measured on the project machines (2 cores): one epoch of the small CNN over 1000
28 px images took 1.9 s with 1 torch thread and 26.9 s with torch's default of 2,
and three datasites on one machine oversubscribe the cores further. So medsyft
uses ``MEDSYFT_TORCH_THREADS`` (default 1); a hospital with a big machine and
one datasite raises it.
"""

from __future__ import annotations

import os

DEFAULT_THREADS = 1


def configure_threads() -> int:
    """Apply ``MEDSYFT_TORCH_THREADS`` (default 1) to torch; returns the count used."""
    import torch

    threads = int(os.environ.get("MEDSYFT_TORCH_THREADS", DEFAULT_THREADS))
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
