"""One NVIDIA FLARE client (Client API): score the received model on the validation hold-out,
train as a medsyft site does, send the weights back weighted by the training images.

NVIDIA FLARE runs this script on each site with ``--bundle DIR --stamps DIR``; it writes the
time each global model arrived to ``DIR/<site>.json`` for the harness's round times.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nvflare.client as flare
import peer_common


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--stamps", type=Path, required=True)
    args = parser.parse_args()
    job = peer_common.load_job(args.bundle)
    flare.init()
    name = flare.get_site_name()
    site = peer_common.load_site(args.bundle, int(name.rsplit("-", 1)[-1]) - 1)  # site-1 .. site-N
    model = peer_common.BundleModel(str(args.bundle / "model.pt"))
    received: list[float] = []
    sent: list[float] = []
    while flare.is_running():
        incoming = flare.receive()
        received.append(peer_common.now())
        model.load_state_dict(incoming.params)
        accuracy, loss = peer_common.evaluate(model, site["val_x"], site["val_y"])
        peer_common.train(model, site["train_x"], site["train_y"], job)
        flare.send(flare.FLModel(params=model.state_dict(), metrics={"accuracy": accuracy, "loss": loss},
                                 meta={"NUM_STEPS_CURRENT_ROUND": len(site["train_x"])}))
        sent.append(peer_common.now())
        args.stamps.mkdir(parents=True, exist_ok=True)
        (args.stamps / f"{name}.json").write_text(json.dumps({"received": received, "sent": sent}))


if __name__ == "__main__":
    main()
