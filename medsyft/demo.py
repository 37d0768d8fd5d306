"""``medsyft demo``: the main job on a local federation over loopback.

1. a key ceremony makes the federation's HE keys; three hospital datasites start as real
   PySyft processes on free 127.0.0.1 ports, each holding the hospitals' secret key;
2. each publishes its shard of one source (Dirichlet label skew, as real hospitals differ)
   with an ε budget;
3. each creates an account for the data scientist;
4. the scientist submits one federated job (one code request per datasite) with DP-SGD and
   encrypted aggregation on;
5. each data owner reviews it through the real review path, printed here with what it will
   spend of the dataset's ε budget, and approves it (automatically, only because this is
   the demo);
6. the rounds run in parallel across the hospitals, under DP, with encrypted updates; the
   orchestrator adds ciphertexts and never sees a model;
7. every owner reviews and approves the release of the final model, the scientist unmasks it,
   and the same model is trained centrally on the union of the same data for comparison.

``--no-dp`` and ``--no-he`` turn a protection off, explicitly (the reviews say so).

The default source is the synthetic chest phantom set, so the demo needs no download;
``--source`` takes real data such as PneumoniaMNIST's ``.npz``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
SCIENTIST = "ana@uni.example"


def _reset(workdir: Path) -> None:
    """Stop datasites a previous demo left running, then start from an empty folder."""
    from domains import lifecycle
    from domains.datadir import DataDir

    for name in HOSPITALS:
        data_dir = DataDir(workdir / name)
        if data_dir.is_initialized:
            lifecycle.stop(data_dir)
    shutil.rmtree(workdir, ignore_errors=True)


def _write_job(workdir: Path, sites: list[Any], args: argparse.Namespace) -> Path:
    """Scientist accounts on every site, their passwords in 0600 files, and job.toml."""
    secrets = workdir / "scientist"
    secrets.mkdir(mode=0o700, parents=True)
    site_tables = []
    for site in sites:
        pw_file = secrets / f"{site.config.name}.txt"
        pw_file.write_text(site.add_scientist(SCIENTIST) + "\n")
        pw_file.chmod(0o600)
        site_tables.append(
            f'[[sites]]\nname = "{site.config.name}"\nurl = "{site.url}"\n'
            f'email = "{SCIENTIST}"\npassword_file = "scientist/{pw_file.name}"\n'
        )
    source = "synthetic" if args.source is None else str(Path(args.source).resolve())
    privacy = (
        f"[privacy]\ndp = {str(not args.no_dp).lower()}\n"
        + (f"noise_multiplier = {args.noise}\n" if args.noise is not None
           else f"target_epsilon = {args.target_epsilon}\n")
        + f"max_grad_norm = 1.0\neval_noise_multiplier = {args.eval_noise}\n"
        f"he = {str(not args.no_he).lower()}\n"
        + ('he_public_key = "keys/orchestrator-public.medsyftkey"\n' if not args.no_he else "")
    )
    job = (
        f'[job]\ndataset = "chest-xray"\nmodel = "auto"\nrounds = {args.rounds}\n'
        f"local_epochs = {args.local_epochs}\nbatch_size = 64\noptimizer = \"adam\"\nlr = {args.lr}\n"
        f"fraction = 1.0\nmin_sites = 2\nround_timeout = 120\napproval_timeout = 60\n"
        f'seed = {args.seed}\nrun_dir = "run"\n\n' + privacy + "\n"
        + "\n".join(site_tables)
        + f'\n[baseline]\nsource = "{source}"\ncount = {args.count}\n'
        f'partition = "{args.partition}"\nseed = {args.seed}\n'
        + (f"image_size = {args.image_size}\n" if args.image_size else "")
    )
    path = workdir / "job.toml"
    path.write_text(job)
    return path


def _review_and_approve(sites: list[Any]) -> None:
    from domains.cli import format_review
    from domains.requests import RequestBook

    for site in sites:
        book = RequestBook(site.data_dir)
        for row in book.table().itertuples():
            if row.status != "pending":
                continue
            print(f"\n===== {site.config.name}: data owner reviews request {row.id[:8]} =====")
            print(format_review(book.review(row.id)))
            book.approve(row.id)
            print(f"----- approved by the {site.config.name} data owner (automatic: demo only) -----")


def _report_run(fed: Any) -> None:
    print("\nvalidation metrics per round (pooled over hospitals"
          + (", from the sites' noisy DP releases" if fed.spec.dp else "") + "):")
    print(fed.pooled().round(3).to_string())
    cols = [c for c in ("round", "round_s", "train_s", "upload_s", "execute_s", "get_s", "aggregate_s",
                        "round_per_train", "update_MB", "x_float32") if c in fed.timing]
    print("\nround time breakdown (seconds) and wire cost per site update:")
    print(fed.timing[cols].round(3).to_string(index=False))
    wire = fed.wire_cost()
    if wire is not None:
        print(wire)
    eps = fed.epsilon()
    if not eps.empty:
        print("\nε per hospital after the job (RDP accountant, at each dataset's δ):")
        print(eps.round(3).assign(delta=eps["delta"].map("{:.0e}".format)).to_string())


def _release(job: Any, sites: list[Any], fed: Any) -> Any:
    """Every owner reviews the release of the encrypted final model; the scientist unmasks it."""
    if fed.spec.he is None:
        return fed
    print("\n[7/7] the scientist asks every hospital to release the final model")
    print(job.request_release().to_string(index=False))
    _review_and_approve(sites)
    released = job.fetch_release()
    print(f"released and unmasked: {released.run_dir / 'release' / 'model.npz'} "
          "(record: release.json)")
    return released


def run(args: argparse.Namespace) -> int:
    from domains import Datasite
    from domains.lifecycle import free_ports
    from domains.publish import PublishRequest
    from orchestrator import FederatedJob, comparison, load_config, train_centralized
    from orchestrator.baseline import evaluate_weights

    workdir = Path(args.workdir).resolve()
    _reset(workdir)
    started = time.perf_counter()
    secret = None
    if not args.no_he:
        from privacy.he import init_keys

        secret, _, key_id = init_keys(workdir / "keys")
        print(f"[1/7] key ceremony: HE key {key_id[:8]} (hospitals: secret; orchestrator: public only)")
    print(f"[1/7] deploying {len(HOSPITALS)} datasites on 127.0.0.1 (data in {workdir}) ...")
    with ThreadPoolExecutor(len(HOSPITALS)) as pool:
        sites = list(pool.map(
            lambda name, port: Datasite.deploy(workdir / name, name=name, port=port,
                                               he_key_file=secret),
            HOSPITALS, free_ports(len(HOSPITALS)),
        ))
    for site in sites:
        print(f"      {site.config.name:<11} {site.url}")
    try:
        src = "synthetic chest phantoms" if args.source is None else args.source
        print(f"[2/7] publishing {src} as {args.partition} shards, each with an ε budget ...")
        rows = []
        for i, site in enumerate(sites, start=1):
            req = PublishRequest(source=Path(args.source) if args.source else None,
                                 shard=f"{i}/{len(sites)}", partition=args.partition,
                                 seed=args.seed, name="chest-xray", synthetic_count=args.count,
                                 image_size=args.image_size, epsilon_budget=args.epsilon_budget)
            result = site.publish(**vars(req))
            rows.append({"hospital": site.config.name, "images": result.metadata["n"],
                         **result.metadata["class_counts"],
                         "ε budget": result.metadata["epsilon_budget"],
                         "δ": result.metadata["delta"]})
        print(pd.DataFrame(rows).to_string(index=False))
        print("[3/7] creating the data scientist's accounts and job.toml ...")
        config = load_config(_write_job(workdir, sites, args))
        job = FederatedJob(config)
        print("[4/7] the scientist submits the job to every datasite ...")
        print(job.submit().to_string(index=False))
        print("[5/7] each data owner reviews the request")
        _review_and_approve(sites)
        job.wait_for_approval(timeout=60)
        print(f"\n[6/7] training {config.rounds} rounds across {len(sites)} hospitals ...")
        fed = job.run(progress=True)
        _report_run(fed)
        fed = _release(job, sites, fed)
        central = train_centralized(config, fed.spec)
        federated = fed.summary()
        if fed.weights is not None:  # the released model, scored exactly on the same images
            exact = evaluate_weights(config, fed.spec, fed.weights)
            federated.update(accuracy=exact.accuracy, auc=exact.auc)
        print("\nfederated vs centralized (same model, hyperparameters, DP settings and validation "
              "images; both scored exactly here, in the simulation):")
        print(comparison(federated, central).round(3).to_string())
        print(f"\nplot: {fed.plot()}")
    finally:
        if args.keep_running:
            print(f"\ndatasites keep running; stop them with "
                  f"`medsyft domain stop --data-dir {workdir}/<hospital>`")
        else:
            for site in sites:
                site.stop()
            print("\ndatasites stopped (rerun with --keep-running to explore them)")
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on a local three-hospital federation",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="real data instead of the synthetic phantoms (e.g. an .npz)")
    p.add_argument("--partition", default="dirichlet:1.0", help="default dirichlet:1.0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=3000, help="synthetic images in total")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--image-size", type=int, help="resize to SIZE x SIZE (default: the source's; "
                   "phantoms: 28)")
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    p.add_argument("--target-epsilon", type=float, default=8.0,
                   help="ε each hospital may spend on the whole job; each derives its DP-SGD noise "
                        "from it and its data size (default 8, of a budget of 10)")
    p.add_argument("--noise", type=float, help="a fixed DP-SGD noise multiplier σ instead of a target ε")
    p.add_argument("--eval-noise", type=float, default=5.0,
                   help="noise multiplier of the released validation counts (default 5)")
    p.add_argument("--epsilon-budget", type=float, default=10.0,
                   help="each hospital's ε budget for its dataset (default 10)")
    p.add_argument("--no-dp", action="store_true", help="turn DP-SGD off (logged, shown at review)")
    p.add_argument("--no-he", action="store_true", help="turn encrypted aggregation off (logged)")
    p.add_argument("--workdir", default="demo-run", help="where the datasites keep their data")
    p.add_argument("--keep-running", action="store_true", help="leave the datasites up")
    p.set_defaults(handler=run)
