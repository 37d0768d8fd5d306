"""``medsyft demo``: the main job on a local federation over loopback.

1. one ceremony (``medsyft federation init``) makes the federation's CA, its HE keys, its roster
   and a kit per hospital; three hospital datasites start as real PySyft processes on free
   127.0.0.1 ports, each serving HTTPS with its kit's certificate and accepting only clients with
   a certificate from the federation CA (mutual TLS), each holding the hospitals' secret key and
   its own signing keys;
2. each publishes its shard of one source (Dirichlet label skew, as real hospitals differ)
   with an ε budget;
3. each creates an account for the data scientist;
4. the scientist submits one federated job (one code request per datasite) with DP-SGD and
   encrypted aggregation on;
5. each data owner reviews it through the real review path, printed here with what it will
   spend of the dataset's ε budget, and approves it (automatically, only because this is
   the demo);
6. the rounds run in parallel across the hospitals, under DP, with verifiable secure
   aggregation: each hospital masks, encrypts and signs its update, and verifies and adds the
   others' parts itself; the orchestrator only forwards them and never sees a model;
7. every owner reviews and approves the release of the final model, the scientist unmasks it,
   and the same model is trained centrally on the union of the same data for comparison.

``--no-dp`` and ``--no-he`` turn a protection off, explicitly (the reviews say so); ``--no-roster``
keeps encryption but lets the orchestrator add the ciphertexts (the weaker aggregation that the
roster replaced, kept for comparison).

The default source is the synthetic chest phantom set, so the demo needs no download;
``--source`` takes real data such as PneumoniaMNIST's ``.npz``.

``--workdir`` (default ``demo-run``) must be new, empty, or an earlier demo's folder: the
demo marks the folders it creates with a ``.medsyft-demo`` file, and a rerun replaces only
what an earlier run created there. Any other folder is refused, and nothing in it is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
SCIENTIST = "ana@uni.example"
DEMO_MARKER = ".medsyft-demo"
# Everything a demo run creates in its workdir: a rerun removes these and nothing else.
DEMO_ENTRIES = frozenset({*HOSPITALS, "keys", "scientist", "job.toml", "run", DEMO_MARKER})


def _claim_workdir(workdir: Path) -> None:
    """Make ``workdir`` the demo's, refusing any folder the demo did not create.

    New or empty folders are taken and marked; an earlier demo's folder (it has the marker)
    has its datasites stopped and the demo's own entries removed. A folder holding anything
    else is refused before anything in it is touched: no command deletes what it did not
    create.

    Raises:
        DataDirError: for a file, a non-empty folder without the marker, or a marked folder
            that also holds entries an earlier demo did not create.
    """
    from domains.errors import DataDirError

    if workdir.exists() and not workdir.is_dir():
        raise DataDirError(f"--workdir {workdir} is a file; give a new or empty folder")
    entries = sorted(p.name for p in workdir.iterdir()) if workdir.is_dir() else []
    if entries and DEMO_MARKER not in entries:
        raise DataDirError(
            f"--workdir {workdir} is not empty and is not an earlier demo's folder (it has no "
            f"{DEMO_MARKER} file); the demo deletes only what it created: choose a new or empty folder"
        )
    foreign = [name for name in entries if name not in DEMO_ENTRIES]
    if foreign:
        raise DataDirError(
            f"--workdir {workdir} is an earlier demo's folder but also holds {foreign[0]!r}, which "
            "no demo created; move it out or choose another --workdir"
        )
    _stop_datasites(workdir)
    for name in entries:
        entry = workdir / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / DEMO_MARKER).write_text(
        "created by `medsyft demo`: a later demo run with this --workdir replaces what it made here\n"
    )


def _stop_datasites(workdir: Path) -> None:
    """Stop the datasites an earlier demo left running (``--keep-running``) before removing them."""
    from domains.site import lifecycle
    from domains.site.datadir import DataDir

    for name in HOSPITALS:
        data_dir = DataDir(workdir / name)
        if data_dir.is_initialized:
            lifecycle.stop(data_dir)


def _write_job(workdir: Path, sites: list[Any], args: argparse.Namespace) -> Path:
    """Scientist accounts on every site, their passwords in 0600 files, and job.toml."""
    secrets = workdir / "scientist"
    secrets.mkdir(mode=0o700, parents=True)
    with ThreadPoolExecutor(len(sites)) as pool:  # each account is its own datasite's work (bcrypt)
        passwords = list(pool.map(lambda site: site.add_scientist(SCIENTIST), sites))
    site_tables = []
    for site, password in zip(sites, passwords, strict=True):
        pw_file = secrets / f"{site.config.name}.txt"
        pw_file.touch(mode=0o600)
        pw_file.write_text(password + "\n")
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
        + ('he_public_key = "keys/orchestrator-public.medsyftkey"\n'
           if not args.no_he else "")
        + ('roster = "keys/roster.json"\n' if not (args.no_he or args.no_roster) else "")
    )
    job = (
        f'[job]\ndataset = "chest-xray"\nmodel = "{args.model}"\nrounds = {args.rounds}\n'
        + (f'recipe = "{args.recipe}"\n' if args.recipe else "")
        + f"local_epochs = {args.local_epochs}\nbatch_size = {args.batch_size}\n"
        f'optimizer = "{args.optimizer}"\n'
        f"lr = {args.lr}\nval_fraction = {args.val_fraction}\neval_every = {args.eval_every}\n"
        f"fraction = 1.0\nmin_sites = 2\nround_timeout = 120\napproval_timeout = 60\n"
        f'strategy = "{args.strategy}"\nclass_weights = "{args.class_weights}"\n'
        f'loss = "{args.loss}"\nlogit_tau = {args.logit_tau}\n'
        f'augment = "{args.augment}"\nlr_schedule = "{args.lr_schedule}"\n'
        + (f"proximal_mu = {args.proximal_mu}\n" if args.strategy == "fedprox" else "")
        + f'seed = {args.seed}\nrun_dir = "run"\n\n' + privacy + "\n"
        + '[tls]\nca_file = "keys/scientist/ca.crt"\nclient_cert = "keys/scientist/client.crt"\n'
        'client_key = "keys/scientist/client.key"\n\n'
        + "\n".join(site_tables)
        + f'\n[baseline]\nsource = "{source}"\ncount = {args.count}\n'
        f'partition = "{args.partition}"\nseed = {args.seed}\n'
        + (f"image_size = {args.image_size}\n" if args.image_size else "")
    )
    path = workdir / "job.toml"
    path.write_text(job)
    return path


def _publish_all(sites: list[Any], args: argparse.Namespace) -> pd.DataFrame:
    """Every hospital publishes its shard at once: each upload is its own datasite's work."""
    from domains.data.publish import PublishRequest

    def one(index: int, site: Any) -> dict[str, Any]:
        req = PublishRequest(source=Path(args.source) if args.source else None,
                             shard=f"{index}/{len(sites)}", partition=args.partition,
                             seed=args.seed, name="chest-xray", synthetic_count=args.count,
                             image_size=args.image_size, epsilon_budget=args.epsilon_budget)
        result = site.publish(**vars(req))
        return {"hospital": site.config.name, "images": result.metadata["n"],
                **result.metadata["class_counts"],
                "ε budget": result.metadata["epsilon_budget"], "δ": result.metadata["delta"]}

    with ThreadPoolExecutor(len(sites)) as pool:
        return pd.DataFrame(list(pool.map(one, range(1, len(sites) + 1), sites)))


class StepClock:
    """Wall time of each demo step, so a user sees where start-up goes (run/steps.csv)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.rows: list[dict[str, Any]] = []

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.rows.append({"step": name, "seconds": time.perf_counter() - t0})

    def total(self) -> float:
        return time.perf_counter() - self.started

    def table(self) -> pd.DataFrame:
        """Each step's seconds and share of the whole demo; "other" is printing and imports."""
        frame = pd.DataFrame(self.rows, columns=["step", "seconds"])
        total = self.total()
        rest = total - frame["seconds"].sum()
        other = pd.DataFrame([{"step": "other (imports, printing)", "seconds": rest},
                              {"step": "whole demo", "seconds": total}])
        frame = pd.concat([frame, other], ignore_index=True)
        return frame.assign(share=frame["seconds"] / total)


def _review_and_approve(sites: list[Any]) -> None:
    from domains.cli import format_review
    from domains.review.requests import RequestBook

    def one(site: Any) -> str:
        """One owner's reviews and approvals; the text they read, printed once all are done."""
        book = RequestBook(site.data_dir)
        text = []
        for row in book.table().itertuples():
            if row.status != "pending":
                continue
            text.append(f"\n===== {site.config.name}: data owner reviews request {row.id[:8]} =====\n"
                        + format_review(book.review(row.id)))
            book.approve(row.id)
            text.append(f"----- approved by the {site.config.name} data owner (automatic: demo only) -----")
        return "\n".join(text)

    with ThreadPoolExecutor(len(sites)) as pool:  # each owner reviews on their own datasite
        for text in pool.map(one, sites):
            if text:
                print(text)


def _report_run(fed: Any) -> None:
    print("\nvalidation metrics per round (pooled over hospitals"
          + (", from the sites' noisy DP releases" if fed.spec.dp else "") + "):")
    print(fed.pooled().round(3).to_string())
    cols = [c for c in ("round", "round_s", "train_s", "upload_s", "execute_s", "get_s", "aggregate_s",
                        "round_per_train", "update_MB", "x_float32", "download_MB") if c in fed.timing]
    print("\nround time breakdown (seconds) and wire cost per site (update_MB up, download_MB: the "
          "signed parts it verified):")
    print(fed.timing[cols].round(3).to_string(index=False))
    wire = fed.wire_cost()
    if wire is not None:
        print(wire)
    eps = fed.epsilon()
    if not eps.empty:
        print("\nε per hospital after the job (RDP accountant, at each dataset's δ):")
        print(eps.round(3).assign(delta=eps["delta"].map("{:.0e}".format)).to_string())


def _report_final(config: Any, fed: Any, args: argparse.Namespace, job: Any) -> None:
    """Where the final model is, its test score (the headline), and the centralized comparison."""
    from orchestrator import comparison, holdout, train_centralized
    from orchestrator.baseline import evaluate_weights

    where = fed.run_dir / "release"
    how = "released by every owner" if fed.spec.he else "plaintext"
    print(f"\nfinal model: {where / 'model.npz'} ({how}; model card {where / 'model_card.md'}; "
          f"`medsyft predict --model {where} --images ...` runs it)")
    federated = fed.summary()
    test, why = holdout.score_job(config, fed.spec, fed.weights)
    exact = evaluate_weights(config, fed.spec, fed.weights)  # the final model, scored exactly
    federated.update(accuracy=exact.accuracy, auc=exact.auc)
    print(f"headline: {test.line()}" if test else f"no test score: {why}")
    if args.no_baseline:
        return
    central = train_centralized(config, fed.spec)
    from orchestrator import baseline

    baseline.save(central, fed.run_dir)  # run/baseline.csv, as `medsyft baseline` keeps it
    job.write_model_card(fed)  # the card gains the baseline
    print(f"\nfederated ({config.strategy}) vs centralized: "
          "same model, hyperparameters and DP settings; test split first (neither trained or tuned on "
          "it), then the sites' validation images, all scored exactly here, in the simulation:")
    print(comparison(federated, central, federated_test=test, strategy=config.strategy).round(3).to_string())


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


def _key_ceremony(workdir: Path, ports: list[int]) -> Path:
    """``medsyft federation init`` for the three hospitals on loopback: the CA, every hospital's TLS
    kit (with the HE secret and its signing keys) and the scientist's kit, in one ceremony."""
    from medsyft.federation import init

    keys = workdir / "keys"
    record = init(keys, [f"{name}=127.0.0.1:{port}" for name, port in zip(HOSPITALS, ports, strict=True)],
                  SCIENTIST)
    roster = json.loads((keys / "roster.json").read_text())
    print(f"[1/7] federation {record['federation_id'][:8]}: a CA, a TLS kit per hospital (HE secret, "
          f"signing keys), roster {roster['fingerprint'][:12]}; the scientist holds public files and a "
          "client certificate")
    return keys


# recipe keys ([job], orchestrator.recipes) -> the demo's flags (their dests); a recipe's "model" is written
# as the job's model instead of "auto"
_RECIPE_FLAGS = ("optimizer", "lr", "batch_size", "rounds", "local_epochs", "loss", "logit_tau",
                 "class_weights", "augment", "lr_schedule", "eval_every")
_FLAG_DEFAULTS: dict[str, Any] = {}


def _apply_recipe(args: argparse.Namespace) -> None:
    """``--recipe NAME``: the recipe's value for every flag it sets that was left at its default."""
    from orchestrator.errors import ConfigError
    from orchestrator.recipes import recipe_defaults

    try:
        values = recipe_defaults(args.recipe)
    except ValueError as exc:
        raise ConfigError(f"--recipe: {exc}") from exc
    for key in _RECIPE_FLAGS:
        if key in values and getattr(args, key) == _FLAG_DEFAULTS.get(key):
            setattr(args, key, values[key])
    args.model = values.get("model", "auto")


LAUNCHER_SWITCH = "MEDSYFT_DEMO_LAUNCHER"  # "0": every datasite imports PySyft in its own process


def _launcher() -> Any:
    """One process that imports the datasites' code once and forks the three of them
    (:mod:`domains.site.launcher`); None with ``MEDSYFT_DEMO_LAUNCHER=0``."""
    import os

    from domains.site.launcher import Launcher

    return None if os.environ.get(LAUNCHER_SWITCH, "1") == "0" else Launcher()


# What the later steps would import lazily, in their threads: PySyft's client and the mock's phantom
# texture (MONAI) when publishing, Opacus' validators when the orchestrator builds the global model.
PREIMPORTS = ("syft", "domains.data.publish", "monai.transforms.intensity.array", "opacus.validators",
              "orchestrator.job")


def _preimport() -> None:
    """Import :data:`PREIMPORTS` in this thread, while no other thread of this process runs.

    The launcher imports the datasites' code meanwhile, on one core; this fills the other, which
    would otherwise wait. A thread must not do it: imports in two threads at once can meet a
    half-initialized module (a background import that overlapped the publishing threads once failed
    on MONAI that way), and three publishing threads would each import MONAI too.
    """
    import importlib

    for name in PREIMPORTS:
        importlib.import_module(name)
    from domains.runtime.warm import freeze_heap

    freeze_heap()  # full collections during the rounds never walk these modules again


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    from orchestrator.config import ROBUST_STRATEGIES
    from orchestrator.errors import ConfigError

    args.model = "auto"
    if args.recipe:
        _apply_recipe(args)

    if args.strategy in ROBUST_STRATEGIES and not args.no_he:
        raise ConfigError(f"--strategy {args.strategy} needs --no-he: additive encryption can only add the "
                          "hospitals' updates, and a median or a trimmed mean is not a sum")
    _claim_workdir(workdir)  # first: a refused folder costs no imports and changes nothing
    clock = StepClock()
    launcher = _launcher()  # now: its imports (one core) overlap this process's own (the other)
    with launcher or contextlib.nullcontext():  # closed after the deploys (or a failure before them)
        from domains import Datasite
        from domains.site.lifecycle import free_ports
        from orchestrator import FederatedJob, load_config

        dashboard: Any = None
        ports = free_ports(len(HOSPITALS))
        with clock.step("key ceremony"):
            keys = _key_ceremony(workdir, ports)
        with clock.step("import the client (while the launcher imports)"):
            _preimport()
        print(f"[1/7] deploying {len(HOSPITALS)} datasites on 127.0.0.1, HTTPS with mutual TLS "
              f"(data in {workdir}) ...")
        with clock.step("deploy the datasites (in parallel)"), ThreadPoolExecutor(len(HOSPITALS)) as pool:
            sites = list(pool.map(
                lambda name, port: Datasite.deploy(workdir / name, name=name, port=port, kit=keys / name,
                                                   launcher=launcher),
                HOSPITALS, ports,
            ))
    for site in sites:
        print(f"      {site.config.name:<11} {site.url}")
    try:
        src = "synthetic chest phantoms" if args.source is None else args.source
        print(f"[2/7] publishing {src} as {args.partition} shards, each with an ε budget ...")
        with clock.step("publish the shards (in parallel)"):
            print(_publish_all(sites, args).to_string(index=False))
        print("[3/7] creating the data scientist's accounts and job.toml ...")
        with clock.step("scientist accounts, job.toml"):
            config = load_config(_write_job(workdir, sites, args))
            job = FederatedJob(config)
        if args.dashboard is not None:
            from orchestrator.dashboard.server import serve_job

            dashboard = serve_job(config, job.run_dir.path, args.dashboard)
            print(f"      dashboard: {dashboard.url} (until the demo ends; later: medsyft dashboard "
                  f"--run-dir {job.run_dir.path})")
        print("[4/7] the scientist submits the job to every datasite ...")
        with clock.step("submit the job"):
            print(job.submit().to_string(index=False))
        print("[5/7] each data owner reviews the request")
        with clock.step("review and approve"):
            _review_and_approve(sites)
            job.wait_for_approval(timeout=60)
        print(f"\n[6/7] training {config.rounds} rounds across {len(sites)} hospitals ...")
        with clock.step("training rounds"):
            fed = job.run(progress=True)
        _report_run(fed)
        with clock.step("release the final model"):
            fed = _release(job, sites, fed)
        with clock.step("score the final model" + ("" if args.no_baseline else ", centralized baseline")):
            _report_final(config, fed, args, job)
        print(f"\nplot: {fed.plot()}")
    finally:
        if dashboard is not None:
            dashboard.stop()
        if args.keep_running:
            print(f"\ndatasites keep running; stop them with "
                  f"`medsyft domain stop --data-dir {workdir}/<hospital>`")
        else:
            with clock.step("stop the datasites"), ThreadPoolExecutor(len(sites)) as pool:
                list(pool.map(lambda site: site.stop(), sites))  # each waits up to 3 s on open connections
            print("\ndatasites stopped (rerun with --keep-running to explore them)")
    steps = clock.table()
    steps.to_csv(workdir / "run" / "steps.csv", index=False)
    print("\nwhere the demo's time went (run/steps.csv):\n" + steps.round(2).to_string(index=False))
    print(f"demo finished in {clock.total():.1f} s")
    return 0


# job.toml's [job] strategy values (tested equal); listed here so that `medsyft --help` imports no pydantic
DEMO_STRATEGIES = ["fedavg", "fedprox", "fedmedian", "trimmed-mean", "fedavgm", "fedadam", "fedyogi"]


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
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"],
                   help="local optimizer (default adam; sgd has momentum 0.9)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="expected images per step; under DP the Poisson batch's mean (default 64)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of each site's images held out for validation (default 0.2)")
    p.add_argument("--eval-every", type=int, default=1,
                   help="evaluate every k-th round's model, counted back from the final one (always "
                        "evaluated); under DP each evaluation spends ε, which larger k leaves to "
                        "training (default 1: every round)")
    p.add_argument("--class-weights", default="none", choices=["none", "balanced"],
                   help="balanced: weigh each class's images by N / (K n_k), from the hospitals' "
                        "published class counts (default none)")
    p.add_argument("--loss", default="cross-entropy", choices=["cross-entropy", "logit-adjusted"],
                   help="logit-adjusted: add τ log(n_k / N), from the published class counts, to the "
                        "logits in training (default cross-entropy)")
    p.add_argument("--logit-tau", type=float, default=1.0, help="τ of the logit-adjusted loss (default 1.0)")
    p.add_argument("--augment", default="none", choices=["none", "affine"],
                   help="affine: a random rotation (±10°), scale (±10%%) and shift (±10%%) of every "
                        "training image each time it is used (default none)")
    p.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"],
                   help="cosine: round r of R trains at lr (1 + cos(π (r-1) / R)) / 2 (default constant)")
    p.add_argument("--recipe", help="a measured recipe (orchestrator/recipes.py, e.g. "
                   "dp-logit-adjusted): its values for every training flag left at its default")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the centralized model trained on the union for comparison")
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
    p.add_argument("--no-roster", action="store_true",
                   help="encrypted aggregation without verifiable secure aggregation: the orchestrator "
                        "adds the ciphertexts and sends each site one sum (for comparison; weaker)")
    p.add_argument("--strategy", default="fedavg", choices=DEMO_STRATEGIES,
                   help="how rounds combine (default fedavg; see docs/training.md); fedmedian and "
                        "trimmed-mean need --no-he")
    p.add_argument("--proximal-mu", type=float, default=0.01, help="FedProx's μ (default 0.01)")
    p.add_argument("--workdir", default="demo-run",
                   help="where the datasites and the run are kept (default demo-run); must be new, "
                        f"empty, or an earlier demo's folder (marked by {DEMO_MARKER}), whose "
                        "contents the demo replaces; any other folder is refused untouched")
    p.add_argument("--keep-running", action="store_true", help="leave the datasites up")
    p.add_argument("--dashboard", nargs="?", type=int, const=8765, metavar="PORT",
                   help="serve the live dashboard on 127.0.0.1:PORT during the demo (default 8765; 0: any)")
    p.set_defaults(handler=run)
    _FLAG_DEFAULTS.update({a.dest: a.default for a in p._actions})
