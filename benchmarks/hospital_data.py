"""Hospital-sized data on one datasite: publishing, the training store, and a ResNet-18 DP step.

Usage::

    .venv/bin/python benchmarks/hospital_data.py [--images 20000] [--size 128] [--steps 5] \
        [--modes mock-only,full]

Draws ``--images`` synthetic chest phantoms of ``--size`` px once and writes them as a MedMNIST
``.npz`` (timed apart: a hospital publishes files it has), deploys a fresh datasite, and publishes
that file through the real publish path (read and validate the source, fingerprint, mock,
training store, PySyft upload) once per ``--pysyft-images`` mode in ``--modes``, side by side in
one run, after a 10-phantom publish that pays the process's one-time login and imports. Reports
per mode:

- the publish's wall time and its rate in MB/s of images, against the goal of 50 MB/s;
- this process's peak RSS so far, the datasite's RSS after the upload, and the bytes on disk
  (modes run in the order given, so peak RSS is cumulative: put the smaller mode first);

then the training store's load (memory map plus fingerprint, and the anonymous memory it adds)
and the seconds per DP-SGD step of ResNet-18 at that size (batch 64, one torch thread) on the
memory-mapped store, with the epoch that implies for the 80% training split.

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


def write_source(path: Path, n: int, size: int) -> Path:
    """*n* phantoms as a MedMNIST-style ``.npz`` (``train_images`` (N, H, W), ``train_labels`` (N, 1))."""
    from domains.data.phantom import generate_chest_phantoms

    data = generate_chest_phantoms(n, image_size=size, seed=0)
    np.savez(path, train_images=data.images[:, 0], train_labels=data.labels[:, None])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--modes", default="mock-only,full", help="--pysyft-images modes, in order")
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
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        source = write_source(Path(tmp) / "cxr.npz", args.images, args.size)
        rows += [("images in the source", image_mb, "MB"),
                 ("drawing the phantoms and writing the .npz (not publishing)", time.perf_counter() - t, "s")]
        site = Datasite.deploy(Path(tmp) / "hospital", name="hospital", port=free_ports(1)[0])
        try:
            t = time.perf_counter()  # the first publish logs in and imports: paid once, timed apart
            site.publish(name="warm-up", synthetic_count=10)
            rows.append(("first publish of 10 phantoms (login, imports; once per process)",
                         time.perf_counter() - t, "s"))
            for mode in modes:
                t = time.perf_counter()
                site.publish(source, name=f"cxr-{mode}", pysyft_images=mode)
                publish_s = time.perf_counter() - t
                rows += [(f"{mode}: publish, end to end", publish_s, "s"),
                         (f"{mode}: publish rate", image_mb / publish_s, "MB/s (goal 50)"),
                         (f"{mode}: publishing process, peak RSS so far",
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB"),
                         (f"{mode}: datasite RSS after publish", rss_mb(read_pid(site.data_dir) or 0), "MB"),
                         (f"{mode}: PySyft's store on disk, all so far",
                          folder_mb(site.data_dir.path / "syft"), "MB")]
                print(pd.DataFrame(rows, columns=["what", "value", "unit"]).round(2).to_string(index=False),
                      flush=True)
            rows.append(("training store on disk, all modes", folder_mb(site.data_dir.datasets_dir), "MB"))
            before = anonymous_mb()
            t = time.perf_counter()
            stored = store.load(DataDir(site.data_dir.path), f"cxr-{modes[0]}")
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
