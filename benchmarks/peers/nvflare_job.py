"""The bundle's job in NVIDIA FLARE 2.9: its FedAvg recipe, in the simulator or as real processes.

Run by ``run.py`` inside NVIDIA FLARE's own venv::

    nvflare/bin/python benchmarks/peers/nvflare_job.py --bundle DIR --out DIR --env sim|poc [--he]

- ``--env sim``: ``SimEnv``, the simulator (clients as threads of one process).
- ``--env poc``: ``PocEnv``, NVIDIA FLARE's local real-process mode: a provisioned server, three
  client processes and an admin session on this machine, the job submitted through the admin API.
- ``--he`` (POC only; NVIDIA FLARE refuses HE in the simulator): ``FedAvgRecipeWithHE``, its
  CKKS filters (TenSEAL): clients encrypt their updates, the server adds ciphertexts, clients
  decrypt the sum. Provisioning makes the keys (``PocEnv(use_he=True)``).

Every client runs ``nvflare_client.py``. Two server-side filters of this module's
``WireMeter`` count the serialized bytes of every task sent to a client and every result
received, so the HE run reports what crossed the wire, not an estimate. The final global model
is read from the server's workspace (decrypted with a client's provisioned context under HE)
and written to ``final.npz`` for the harness to score.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peer_common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--env", choices=["sim", "poc"], default="sim")
    parser.add_argument("--he", action="store_true")
    args = parser.parse_args()
    started = peer_common.now()
    if args.he and args.env != "poc":
        raise SystemExit("NVIDIA FLARE's HE recipe needs provisioned keys: use --env poc with --he")

    from wire_meter import WireMeter

    bundle = args.bundle.resolve()
    out = args.out.resolve()
    job = peer_common.load_job(bundle)
    stamps = out / "stamps"
    wire = out / "wire"
    common: dict[str, Any] = dict(
        name="peers_he" if args.he else "peers", min_clients=job["sites"], num_rounds=job["rounds"],
        model={"class_path": "peer_common.BundleModel", "args": {"path": str(bundle / "model.pt")}},
        train_script=str(HERE / "nvflare_client.py"), train_args=f"--bundle {bundle} --stamps {stamps}",
    )
    if args.he:
        from nvflare.app_opt.pt.recipes.fedavg_he import FedAvgRecipeWithHE

        recipe: Any = FedAvgRecipeWithHE(**common)
    else:
        from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe

        recipe = FedAvgRecipe(**common)
    recipe.add_server_output_filter(WireMeter(str(wire), "down"), tasks=["train"])
    recipe.add_server_input_filter(WireMeter(str(wire), "up"), tasks=["train"])
    if args.env == "sim":
        from nvflare.recipe.sim_env import SimEnv

        env: Any = SimEnv(num_clients=job["sites"], workspace_root=str(out / "workspace"))
    else:
        os.environ["NVFLARE_POC_WORKSPACE"] = str(out / "poc")  # its own, not the user's ~/.nvflare one
        from nvflare.recipe.poc_env import PocEnv

        env = PocEnv(num_clients=job["sites"], use_he=args.he)
    run = recipe.execute(env)
    result_dir = run.get_result(timeout=3600, clean_up=False)
    finished = peer_common.now()
    try:
        final = _final_model(Path(result_dir) if result_dir else out / "workspace", bundle,
                             getattr(env, "poc_workspace", None) if args.he else None)
    finally:
        if args.env == "poc":
            env.stop(clean_up=True)
    received = [json.loads(p.read_text()) for p in sorted(stamps.glob("*.json"))]
    starts = [min(site["received"][r] for site in received) for r in range(job["rounds"])]
    ends = [max(site["sent"][r] for site in received) for r in range(job["rounds"])]
    up, down, cipher = _wire(wire)
    peer_common.write_result(out, {
        "system": "NVIDIA FLARE", "started": started, "rounds_start": starts[0],
        # a round ends when the next global model reaches the clients, the last when they sent
        "round_ends": [*starts[1:], ends[-1]], "up_bytes": up, "down_bytes": down,
        "up_ciphertext_bytes": cipher,
        "finished": finished,
        "note": f"{'POC: server + 3 client processes' if args.env == 'poc' else 'simulator'}"
                f"{', CKKS filters' if args.he else ''}",
    }, final)


def _wire(folder: Path) -> tuple[float, float, float]:
    """Median serialized bytes per client and round, up (results) and down (tasks; round 1's
    plaintext initial model left out), and the median update's CKKS vectors alone."""
    import numpy as np

    rows = [json.loads(line) for path in folder.glob("*.jsonl") for line in path.read_text().splitlines()]
    rows = [row for row in rows if row["task"] == "train"]
    up = [row["bytes"] for row in rows if row["direction"] == "up"]
    down = [row["bytes"] for row in rows if row["direction"] == "down"]
    later = down[len(set(row["peer"] for row in rows)):] or down  # the server logs in send order
    cipher = [row["ciphertext_bytes"] for row in rows if row["direction"] == "up"]
    return float(np.median(up)), float(np.median(later)), float(np.median(cipher))


def _final_model(result: Path, bundle: Path, poc_workspace: str | None) -> dict[str, Any]:
    """The server's last global model, as numpy arrays named as the bundle's model names them;
    under HE (*poc_workspace* given), decrypted with a client's provisioned context."""
    import numpy as np
    import torch

    found = sorted(result.rglob("FL_global_model.pt"))  # never another .pt: it may be a round's model
    if not found:
        raise SystemExit(f"no FL_global_model.pt under {result}")
    saved = torch.load(found[0], map_location="cpu", weights_only=False)
    state = saved.get("model", saved) if isinstance(saved, dict) else saved
    if poc_workspace is None:
        return {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items()}
    import tenseal as ts

    contexts = sorted(Path(str(poc_workspace)).rglob("client_context.tenseal"))
    context = ts.context_from(contexts[0].read_bytes())
    model = peer_common.BundleModel(str(bundle / "model.pt"))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = {}
    for name, value in state.items():
        if isinstance(value, bytes | bytearray):
            vector = ts.ckks_vector_from(context, bytes(value))
            weights[name] = np.asarray(vector.decrypt(), dtype=np.float32).reshape(shapes[name])
        else:
            plain = value.numpy() if hasattr(value, "numpy") else value
            weights[name] = np.asarray(plain).reshape(shapes[name])
    return weights


if __name__ == "__main__":
    main()
