"""Hospital-sized data on one datasite: publishing, the training store, and a ResNet-18 DP step.

Usage::

    .venv/bin/python benchmarks/hospital_data.py [--images 20000] [--size 128] [--steps 5]

Deploys a fresh datasite and publishes ``--images`` synthetic chest phantoms of ``--size`` px
through the real publish path (validation, mock, training store, PySyft upload). Reports:

- the publish's wall time and its rate in MB/s of images, against the goal of 50 MB/s;
- this process's peak RSS, the datasite's RSS after the upload, and the bytes on disk;
- the training store's load: its time (memory map plus fingerprint) and the anonymous memory
  it adds;
- the seconds per DP-SGD step of ResNet-18 at that size (batch 64, one torch thread), timed
  over ``--steps`` steps on the memory-mapped store, and the epoch that implies for the 80%
  training split.

Numbers go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from deploy_publish import rss_mb  # this folder is on sys.path when a benchmark runs as a script


def anonymous_mb() -> float:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    from domains import Datasite
    from domains.data import store
    from domains.runtime.local import train_local
    from domains.runtime.models import build_model
    from domains.runtime.threads import configure_threads
    from domains.shared.spec import DPTraining, TrainConfig
    from domains.site.datadir import DataDir
    from domains.site.lifecycle import free_ports, read_pid

    rows: list[tuple[str, float, str]] = []
    image_mb = args.images * args.size * args.size / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        site = Datasite.deploy(Path(tmp) / "hospital", name="hospital", port=free_ports(1)[0])
        try:
            t = time.perf_counter()
            site.publish(name="cxr", synthetic_count=args.images, image_size=args.size)
            publish_s = time.perf_counter() - t
            rows += [("images published", image_mb, "MB"),
                     ("publish, end to end", publish_s, "s"),
                     ("publish rate", image_mb / publish_s, "MB/s (goal 50)"),
                     ("publishing process, peak RSS",
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB"),
                     ("datasite RSS after publish", rss_mb(read_pid(site.data_dir) or 0), "MB"),
                     ("training store on disk", folder_mb(site.data_dir.datasets_dir), "MB"),
                     ("PySyft's store on disk", folder_mb(site.data_dir.path / "syft"), "MB")]
            print(pd.DataFrame(rows, columns=["what", "value", "unit"]).round(2).to_string(index=False),
                  flush=True)
            before = anonymous_mb()
            t = time.perf_counter()
            stored = store.load(DataDir(site.data_dir.path), "cxr")
            rows += [("store load (memory map + fingerprint)", time.perf_counter() - t, "s"),
                     ("anonymous memory the load added", anonymous_mb() - before, "MB")]
        finally:
            site.stop()
        configure_threads()
        model = build_model("resnet18", in_channels=1, num_classes=2, image_size=args.size)
        batch = 64
        picked = np.arange(min(len(stored.labels), batch * args.steps))
        t = time.perf_counter()
        result = train_local(model, stored.images, stored.labels, indices=picked,
                             config=TrainConfig(epochs=1, batch_size=batch, optimizer="sgd", lr=0.1),
                             dp=DPTraining(noise_multiplier=1.0, max_grad_norm=1.0))
        per_step = (time.perf_counter() - t) / max(1, result.steps)
        train_images = round(0.8 * args.images)
        rows += [(f"ResNet-18 DP-SGD step, batch {batch}, {args.size} px", per_step, "s"),
                 ("one local epoch over the training split (estimated)", per_step * train_images / batch / 60,
                  "min")]
    table = pd.DataFrame(rows, columns=["what", "value", "unit"])
    print("\n" + table.round(2).to_string(index=False))
    table.to_csv(Path(tempfile.gettempdir()) / "medsyft-hospital-data.csv", index=False)


if __name__ == "__main__":
    main()
