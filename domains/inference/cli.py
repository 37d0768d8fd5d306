"""``medsyft predict`` and ``medsyft export``: a released model at the hospital.

Either names a model directory (``--model RUN_DIR/release``, the scientist's copy or one handed to
the hospital) or this datasite's own copy (``--data-dir DIR --job JOB_ID``), which a hospital may
use without the scientist once its owner approved the release.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from domains.errors import InferenceError

EXIT_SOME_FAILED = 1


def _artifact(args: argparse.Namespace) -> Any:
    from domains.inference.artifact import load_datasite_copy, load_model_dir

    if (args.model is None) == (args.data_dir is None):
        raise InferenceError("give --model RELEASE_DIR, or --data-dir DIR with --job JOB_ID (this datasite's "
                             "own copy), not both")
    if args.model is not None:
        if args.job is not None:
            raise InferenceError("--job goes with --data-dir; a --model folder holds one model")
        return load_model_dir(args.model)
    if args.job is None:
        raise InferenceError("--data-dir needs --job JOB_ID: the job whose released model to use "
                             "(`medsyft domain requests` lists them)")
    from domains.site.datadir import DataDir

    data_dir = DataDir(args.data_dir)
    data_dir.require_initialized()
    return load_datasite_copy(data_dir, args.job)


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from domains.inference.images import image_files
    from domains.inference.predict import predict_files

    artifact = _artifact(args)
    files = image_files(args.images)
    if args.csv is not None and Path(args.csv).is_dir():
        raise InferenceError(f"--csv {args.csv} is a directory; give a file name, e.g. predictions.csv")
    spec = artifact.spec
    print(f"model: job {spec.job_id}, {spec.model}, {spec.in_channels}x{spec.image_size}x{spec.image_size} "
          f"input, classes {', '.join(artifact.label_names)} ({artifact.source})")

    def progress(done: int, total: int) -> None:
        if total > 64:
            print(f"\rpredicted {done}/{total}", end="" if done < total else "\n", file=sys.stderr,
                  flush=True)

    result = predict_files(artifact, files, on_progress=progress)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 60,
                           "display.float_format", "{:.3f}".format):
        print(result.table.to_string(index=False) if not result.table.empty else "(no image predicted)")
    if args.csv is not None:
        from privacy.durable import atomic_write

        atomic_write(Path(args.csv), result.table.to_csv(index=False))
        print(f"csv: {args.csv}")
    for reason in result.failed.values():
        print(f"medsyft: error: {reason}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} of {len(files)} images could not be read (named above); the others were "
              "predicted", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from domains.inference.export import SUFFIX, export_model

    artifact = _artifact(args)
    if args.out is not None:
        out = Path(args.out)
    elif args.model is not None:
        out = Path(args.model) / f"model{SUFFIX[args.format]}"
    else:
        out = Path(f"{artifact.spec.job_id}{SUFFIX[args.format]}")
    done = export_model(artifact, args.format, out)
    print(f"{done.format}: {done.path} ({done.bytes / 1e6:.2f} MB); outputs match the torch model within "
          f"{done.max_abs_diff:.1e} on {artifact.spec.image_size} px phantoms")
    return 0


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="RELEASE_DIR", help="a model directory: RUN_DIR/release (model.npz "
                   "and model_card.json)")
    p.add_argument("--data-dir", metavar="DIR", help="this datasite's data directory: use its own copy of "
                   "a released model (with --job)")
    p.add_argument("--job", metavar="JOB_ID", help="with --data-dir: the job whose released model to use")


def register(subparsers: Any) -> None:
    from domains.inference.export import FORMATS

    p = subparsers.add_parser("predict", help="run a released model on PNG/JPEG/DICOM images",
                              description=__doc__)
    _source_args(p)
    p.add_argument("--images", nargs="+", required=True, metavar="PATH",
                   help="image files or folders (searched recursively)")
    p.add_argument("--csv", metavar="OUT", help="also write the probabilities as CSV")
    p.set_defaults(handler=cmd_predict)
    p = subparsers.add_parser("export", help="export a released model as TorchScript or ONNX",
                              description=__doc__)
    _source_args(p)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", metavar="FILE", help="where to write it (default: model.pt / model.onnx in "
                   "the model directory)")
    p.set_defaults(handler=cmd_export)
