"""The bundle's job in Flower's simulation engine (``flwr.simulation.run_simulation``, Ray).

Run by ``run.py`` inside Flower's own venv::

    flower/bin/python benchmarks/peers/flower_job.py --bundle DIR --out DIR

A ServerApp runs Flower's ``FedAvg`` (weighted by each client's training images) from the
bundle's initial weights; a ClientApp per site trains as medsyft's sites do
(``peer_common.train``), and Flower's federated evaluation scores every global model on the
sites' validation hold-outs, which a medsyft round also does. ``evaluate_fn`` on the server only
stamps the time each global model exists and keeps the last one; the harness scores it on the
test split. Writes ``result.json`` (round timestamps, bytes) and ``final.npz``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_common


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = peer_common.now()

    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    bundle = args.bundle.resolve()
    job = peer_common.load_job(bundle)
    stamps: list[float] = []
    final: dict[str, Any] = {}

    def client_model(msg: Message) -> Any:
        model = peer_common.BundleModel(str(bundle / "model.pt")).net
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        return model

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        site = peer_common.load_site(bundle, int(context.node_config["partition-id"]))
        model = client_model(msg)
        peer_common.train(model, site["train_x"], site["train_y"], job)
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                              "metrics": MetricRecord({"num-examples": len(site["train_x"])})})
        return Message(content=content, reply_to=msg)

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        site = peer_common.load_site(bundle, int(context.node_config["partition-id"]))
        accuracy, loss = peer_common.evaluate(client_model(msg), site["val_x"], site["val_y"])
        metrics = MetricRecord({"accuracy": accuracy, "loss": loss, "num-examples": len(site["val_x"])})
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    server = ServerApp()

    @server.main()
    def run(grid: Grid, context: Context) -> None:
        initial = peer_common.BundleModel(str(bundle / "model.pt")).net

        def stamp(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            stamps.append(peer_common.now())
            final["arrays"] = arrays
            return MetricRecord({})

        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=job["sites"],
                          min_evaluate_nodes=job["sites"], min_available_nodes=job["sites"])
        strategy.start(grid=grid, initial_arrays=ArrayRecord(initial.state_dict()),
                       num_rounds=job["rounds"], evaluate_fn=stamp)

    # The machine's cores shared by all clients, so that every site trains at once, as medsyft's
    # datasites and NVIDIA FLARE's clients do (Flower's default of 2 CPUs per client would train
    # one site at a time here).
    cpus = round((os.cpu_count() or 1) / job["sites"], 3)
    run_simulation(server_app=server, client_app=client, num_supernodes=job["sites"],
                   backend_config={"client_resources": {"num_cpus": cpus, "num_gpus": 0.0}})
    weights = {name: t.numpy() for name, t in final["arrays"].to_torch_state_dict().items()}
    size = peer_common.payload_bytes(weights)
    # down: the global model goes out for training and again for evaluation
    peer_common.write_result(args.out, {
        "system": "Flower", "started": started, "round_ends": stamps[1:], "rounds_start": stamps[0],
        "up_bytes": size, "down_bytes": 2 * size, "finished": peer_common.now(),
    }, weights)


if __name__ == "__main__":
    main()
