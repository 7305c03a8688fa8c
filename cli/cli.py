"""The ``flexguard`` command: one entry point, one subcommand per job.

Each subcommand imports its heavy dependencies only when it runs, so ``flexguard serve`` never loads
torch and ``--help`` is instant. A user's mistake (missing file, bad manifest, bad model) ends with one
line on stderr and exit status 2, never a traceback.

Over 300 lines because every subcommand's arguments and help text are declared here, where
``flexguard --help`` users and readers find them together; the work itself is in the packages.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flexguard import __version__

from . import admin, data

USAGE_ERROR = 2


class UserError(Exception):
    """A problem with what the user asked for, reported as one line."""


def _add_split_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fold", type=int, default=0, help="which fold validates (default: 0)")
    parser.add_argument("--n-folds", type=int, default=5, help="number of group folds (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed for folds and sampling (default: 0)")
    parser.add_argument("--train-only-group", action="append", default=[], metavar="GROUP",
                        help="a group that is always trained on, never validated (repeatable; see datasets/README.md)")
    parser.add_argument("--by", choices=("group", "source"), default="group",
                        help="what a fold holds whole: a group, or a whole source (validation by unseen source)")
    parser.add_argument("--keep-subgroups", action="append", default=[], metavar="SOURCE",
                        help="with --by source: a source split by make or brand whose groups stay separate units (repeatable)")


def _split_options(args: argparse.Namespace) -> dict:
    """The split arguments as ``group_split`` takes them."""
    return dict(val_fold=args.val_fold, n_folds=args.n_folds, seed=args.seed, train_only=args.train_only_group,
                by=args.by, keep_subgroups=args.keep_subgroups)


def _require_training_extra() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("this command needs the training extra: pip install 'flexguard[train]'") from None


def _require_eval_extra() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise UserError("this command needs the evaluation extra: pip install 'flexguard[eval]'") from None


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _cmd_train(args: argparse.Namespace) -> None:
    _require_training_extra()
    from dataclasses import replace

    from flexguard.training.backbone import INPUT_SPEC
    from flexguard.training.train import TrainConfig, train

    config = TrainConfig(
        manifests=[str(m) for m in args.manifest], out_dir=str(args.out), cache_dir=str(args.cache_dir),
        seed=args.seed, n_folds=args.n_folds, val_fold=None if args.all else args.val_fold,
        train_only_groups=args.train_only_group,
        split_by=args.by, keep_subgroups=args.keep_subgroups, views=args.views, epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, workers=args.workers,
        spec=replace(INPUT_SPEC, resize_mode=args.resize_mode), anchored=args.anchor, recipe=args.recipe,
        heads=args.heads, heads_c=args.heads_c,
        **({"head_seeds": args.head_seeds} if args.head_seeds else {}),
    )
    train(config)


def _parse_named_model(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep:
        return Path(text).stem, Path(text)
    return name, Path(path)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    _require_eval_extra()
    from flexguard.datasets.manifest import load_manifests
    from flexguard.training.evaluate import evaluate

    from flexguard.training.evaluate import FOLD_FIELD, model_for_fold

    models = dict([_parse_named_model(args.model), *map(_parse_named_model, args.compare)])
    per_fold = args.split == "folds"
    for name, path in models.items():
        if FOLD_FIELD in str(path) and not per_fold:
            raise UserError(f"model {name!r}: a path with {FOLD_FIELD} needs --split folds")
        for candidate in [model_for_fold(path, fold) for fold in range(args.n_folds)] if per_fold else [path]:
            if not candidate.is_file():
                raise UserError(f"model {name!r} not found: {candidate}")
    if args.stamp and per_fold:
        raise UserError("--split folds has one model per fold: stamp its figures into the model trained on all data "
                        "with --stamp-into PATH")
    if args.thresholds == "stamped" and per_fold:
        raise UserError("--thresholds stamped: cross-validation chooses its thresholds on the pooled out-of-fold scores")
    if args.thresholds == "stamped" and (args.stamp or args.stamp_into is not None):
        raise UserError("--thresholds stamped keeps the model's thresholds: there is nothing new to stamp")
    if args.stamp_into is not None and not args.stamp_into.is_file():
        raise UserError(f"--stamp-into: model not found: {args.stamp_into}")
    manifest = load_manifests(args.manifest)
    files = evaluate(models, primary=next(iter(models)), manifest=manifest, split=args.split, out_dir=args.out,
                     split_options=_split_options(args),
                     notes=args.note, thresholds=args.thresholds, score_cache=args.score_cache)
    print(f"report: {files.markdown}\n        {files.html}\nmetrics: {files.metrics}")
    primary, primary_path = next(iter(models.items()))
    if args.max_auc_drop is not None:
        _check_auc_drop(files.metrics, primary, [name for name in models if name != primary], args.max_auc_drop)
    if args.stamp or args.stamp_into is not None:
        from flexguard.models.metadata import stamp_evaluation

        target = args.stamp_into if args.stamp_into is not None else primary_path
        info = stamp_evaluation(target, files.metrics, primary)
        print(f"stamped {target}: review {info.thresholds.review:.4f}, block {info.thresholds.block:.4f}")


def _check_auc_drop(metrics_path: Path, primary: str, references: list[str], max_drop: float) -> None:
    """Refuse a model (e.g. a quantised one) that loses more ROC-AUC than allowed against its reference."""
    import json

    if not references:
        raise UserError("--max-auc-drop needs a reference model given with --compare")
    models = json.loads(metrics_path.read_text())["models"]
    reference = references[0]
    drop = models[reference]["roc_auc"] - models[primary]["roc_auc"]
    if drop > max_drop:
        raise UserError(f"{primary} loses {drop:.4f} ROC-AUC against {reference}, more than the allowed {max_drop}")
    print(f"{primary} ROC-AUC within {max_drop} of {reference} (drop {drop:.4f})")


def _cmd_quantize(args: argparse.Namespace) -> None:
    from flexguard.datasets.manifest import load_manifests
    from flexguard.datasets.splits import group_split
    from flexguard.models.metadata import read_info
    from flexguard.training.quantize import calibration_paths, quantize

    if not args.model.is_file():
        raise UserError(f"model not found: {args.model}")
    spec = read_info(args.model).preprocess
    manifest = load_manifests(args.manifest)
    train_idx, _ = group_split(manifest, **_split_options(args))
    paths = calibration_paths(manifest.subset(train_idx), args.calibration_photos, args.seed)
    out = quantize(args.model, args.out, paths, spec)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), calibrated on {len(paths)} training photos; "
          f"evaluate it with `flexguard evaluate --model {out} --compare {args.model} --stamp`")


def _cmd_export(args: argparse.Namespace) -> None:
    _require_training_extra()
    from flexguard.training import export

    if args.baseline:
        from flexguard.models.metadata import Thresholds

        # Placeholder thresholds: `flexguard evaluate` chooses each model's own on the evaluated split.
        path = export.export_baseline(args.out, Thresholds(review=0.5, block=0.9))
    else:
        if args.checkpoint is None:
            raise UserError("give --checkpoint (a training run's checkpoint.pt) or --baseline")
        if not args.checkpoint.is_file():
            raise UserError(f"checkpoint not found: {args.checkpoint}")
        path = export.export_checkpoint(args.checkpoint, args.out, args.name, args.model_version)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _cmd_serve(args: argparse.Namespace) -> None:
    import copy

    import uvicorn
    from pydantic import ValidationError
    from uvicorn.config import LOGGING_CONFIG

    from flexguard.service.app import create_app, load_engine, open_review
    from flexguard.service.settings import Settings, explain

    overrides = {k: v for k, v in (("model_path", args.model), ("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        raise UserError(explain(error)) from None
    # Load here, not in the server's startup, so a missing or broken model or database ends with one line.
    engine = load_engine(settings)
    review = open_review(settings)
    # The service's own startup line goes out through uvicorn's handler, like the server's.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["flexguard"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    # timeout_keep_alive closes idle connections; a request's body has its own deadline in the app
    # (FLEXGUARD_BODY_TIMEOUT_S), and h11 caps a request's headers at 16 KB.
    uvicorn.run(
        create_app(settings, engine=engine, review=review), host=settings.host, port=settings.port, log_config=log_config,
        timeout_keep_alive=settings.keep_alive_s,
    )


def _cmd_import_folder(args: argparse.Namespace) -> None:
    from flexguard.datasets.manifest import import_folder

    manifest = import_folder(args.root, args.out)
    print(f"wrote {args.out}: {len(manifest)} photos")


# Exit status of a scan that found a photo at or over --fail-on (2 stays "usage error").
SCAN_FLAGGED_STATUS = 1


def _cmd_scan(args: argparse.Namespace) -> None:
    from flexguard.scan.runner import ScanOptions, run_scan
    from flexguard.scan.rows import ScanError

    options = ScanOptions(
        roots=args.paths, out=args.out, include=args.include, exclude=args.exclude, force=args.force,
        report=args.report, engine=args.engine, server=args.server, ray_address=args.ray_address,
        model=args.model, workers=args.workers, batch_size=args.batch_size,
    )
    try:
        summary = run_scan(options)
    except ScanError as error:
        raise UserError(str(error)) from None
    print("\n".join(summary.lines()))
    flagged = summary.at_or_over(args.fail_on) if args.fail_on else 0
    if flagged:
        print(f"flexguard scan: {flagged} files at or over {args.fail_on} (--fail-on {args.fail_on})", file=sys.stderr)
        # main() returns 0 once a command returns; SystemExit is how a command asks for another status.
        raise SystemExit(SCAN_FLAGGED_STATUS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexguard", description="Screen photos for displays of wealth before they are posted.")
    parser.add_argument("--version", action="version", version=f"flexguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="fine-tune the model on labelled photos (needs flexguard[train])",
                                description="Fine-tune EfficientNet-Lite2 on a manifest. Validation holds out whole groups. "
                                            "Writes checkpoint.pt, probe.pt (the linear probe), config.json and history.jsonl to --out.")
    train.add_argument("manifest", nargs="+", type=Path, help="manifest CSV(s), or a folder of manifest*.csv")
    train.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder (default: runs/train)")
    train.add_argument("--cache-dir", type=Path, default=Path(".cache/flexguard"), help="activation cache (default: .cache/flexguard)")
    train.add_argument("--views", type=int, default=6, help="cached views per photo: 1 clean + augmented (default: 6)")
    train.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default: 10)")
    train.add_argument("--steps-per-epoch", type=int, default=40, help="batches per epoch (default: 40)")
    train.add_argument("--batch-size", type=int, default=64, help="photos per batch (default: 64)")
    train.add_argument("--workers", type=int, default=2, help="decoding processes (default: 2)")
    train.add_argument("--anchor", action=argparse.BooleanOptionalAction, default=True,
                       help="ship the average of the fine-tuned and linear-probe branches (default: on)")
    train.add_argument("--recipe", choices=("finetune", "ensemble"), default="finetune",
                       help="finetune: Lite2's last blocks fine-tuned (default); ensemble: frozen Lite0 at 384 px and Lite2 at 260, "
                            "heads over their pooled features (training/ensemble.py says why; minutes once the features "
                            "are cached)")
    train.add_argument("--heads", choices=("mlp", "linear"), default="mlp",
                       help="ensemble: one two-layer network for all categories (default; out of fold by unseen source "
                            "0.936 ROC-AUC against 0.920) or one logistic regression per category")
    train.add_argument("--head-seeds", type=_at_least_one, metavar="N",
                       help="ensemble, two-layer heads: fit N of them from successive seeds and average their logits, "
                            "as one wider layer in the same graph (default: 3, chosen by validation on unseen sources)")
    train.add_argument("--heads-c", type=float, default=0.01,
                       help="ensemble, linear heads: their inverse L2 strength on standardised features (default: 0.01)")
    train.add_argument("--all", action="store_true",
                       help="train on every photo, with no validation: the model to ship, whose thresholds and figures "
                            "come from cross-validation (`make model`; `flexguard evaluate --split folds --stamp-into`)")
    train.add_argument("--resize-mode", choices=("letterbox", "squash"), default="letterbox", help="how the whole photo is fitted (default: letterbox)")
    _add_split_arguments(train)
    train.set_defaults(func=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="score a labelled manifest and write a report",
                                   description="Score the validation split of a manifest with ONNX models through the serving engine, "
                                               "and write report.md, report.html and metrics.json. The first model is the primary one.")
    evaluate.add_argument("--model", required=True, help="ONNX model to evaluate, as PATH or NAME=PATH")
    evaluate.add_argument("--compare", action="append", default=[], help="another model to compare, NAME=PATH (repeatable)")
    evaluate.add_argument("--manifest", nargs="+", type=Path, required=True, help="manifest CSV(s), or a folder of manifest*.csv")
    evaluate.add_argument("--split", choices=("group", "random", "all", "folds"), default="group",
                          help="group: held-out groups (default); random: leaks, for comparison only; all: every photo; "
                               "folds: cross-validation, each fold scored by its own model (a model path with {fold}, "
                               "e.g. runs/cv/fold-{fold}/flexguard.onnx), the out-of-fold scores pooled")
    evaluate.add_argument("--out", type=Path, default=Path("runs/eval"), help="report folder (default: runs/eval)")
    evaluate.add_argument("--thresholds", choices=("chosen", "stamped"), default="chosen",
                          help="chosen: review and block thresholds chosen on these photos at 5%% and 1%% FPR "
                               "(default); stamped: each model's own, as its users get them (for photos from "
                               "new sources)")
    evaluate.add_argument("--note", action="append", default=[], help="a line to add under the report's title (repeatable)")
    evaluate.add_argument("--stamp", action="store_true",
                          help="write the first model's thresholds and metrics from this evaluation into its ONNX file")
    evaluate.add_argument("--stamp-into", type=Path, metavar="PATH",
                          help="write the first model's thresholds and metrics from this evaluation into PATH instead: "
                               "with --split folds, the model trained on all the data")
    evaluate.add_argument("--score-cache", type=Path, metavar="DIR",
                          help="keep every model file's scores by photo in DIR and reuse them, so that the same file is "
                               "never run twice on the same photo (`make model` scores each fold's model twice); "
                               "default: no cache, every photo scored afresh")
    evaluate.add_argument("--max-auc-drop", type=float, metavar="DROP",
                          help="fail (exit 2) if the first model's ROC-AUC is more than DROP below the first --compare model's")
    _add_split_arguments(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    export = commands.add_parser("export", help="write a trained model as a self-describing ONNX file",
                                 description="Export a checkpoint to ONNX (dynamic batch; outputs scores and activation maps) "
                                             "with taxonomy, input spec, thresholds, version, data hash and metrics in its metadata.")
    export.add_argument("--checkpoint", type=Path, help="checkpoint.pt or probe.pt from `flexguard train`")
    export.add_argument("--baseline", action="store_true", help="export the zero-training ImageNet baseline instead")
    export.add_argument("--name", default="flexguard", help="model name in the metadata (default: flexguard)")
    export.add_argument("--model-version", help="model version in the metadata (default: the export's date and the first "
                                                "8 hex digits of the weights' SHA-256, e.g. 2026.11.30+3f9a0c1e, so every "
                                                "retrain gets its own)")
    export.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    export.set_defaults(func=_cmd_export)

    quantize = commands.add_parser("quantize", help="write an INT8 copy of a model, calibrated on training photos",
                                   description="Static INT8 quantisation (onnxruntime, QDQ, per-channel weights), calibrated on "
                                               "photos from the training side of the split. Evaluate the result before shipping it.")
    quantize.add_argument("--model", type=Path, required=True, help="fp32 ONNX model")
    quantize.add_argument("--manifest", nargs="+", type=Path, required=True, help="manifest CSV(s), or a folder of manifest*.csv")
    quantize.add_argument("--out", type=Path, required=True, help="INT8 ONNX file to write")
    quantize.add_argument("--calibration-photos", type=int, default=300, help="photos to calibrate on (default: 300)")
    _add_split_arguments(quantize)
    quantize.set_defaults(func=_cmd_quantize)

    serve = commands.add_parser("serve", help="start the REST service",
                                description="Serve the REST API (/v1/score, /v1/model, /v1/submissions, /healthz, /readyz, /metrics; "
                                            "docs at /docs). Settings come from environment variables, which these "
                                            "options override: FLEXGUARD_MODEL_PATH, FLEXGUARD_MODEL_VARIANT (int8, the default, or fp32), FLEXGUARD_HOST, FLEXGUARD_PORT, "
                                            "FLEXGUARD_THREADS, FLEXGUARD_DECODE_THREADS, FLEXGUARD_MAX_BATCH, "
                                            "FLEXGUARD_MAX_WAIT_MS, FLEXGUARD_MAX_FILES, FLEXGUARD_MAX_BYTES, "
                                            "FLEXGUARD_MAX_PIXELS, FLEXGUARD_MAX_CONCURRENT_REQUESTS (more get 503), "
                                            "videos: FLEXGUARD_MAX_VIDEOS (2 a request), FLEXGUARD_MAX_VIDEO_BYTES (100 MB), "
                                            "FLEXGUARD_MAX_VIDEO_SECONDS (180), FLEXGUARD_MAX_VIDEO_FRAME_PIXELS (8K), "
                                            "FLEXGUARD_VIDEO_FRAMES (64 scored), FLEXGUARD_VIDEO_EVERY_S (1 s apart); "
                                            "FLEXGUARD_BODY_TIMEOUT_S (slower bodies get 408), FLEXGUARD_KEEP_ALIVE_S, "
                                            "FLEXGUARD_API_KEYS (comma-separated; empty: no key "
                                            "needed), FLEXGUARD_CORS_ORIGINS (comma-separated), FLEXGUARD_RATE_LIMIT_PER_MINUTE "
                                            "(per key; 0, the default: off; more get 429), FLEXGUARD_RATE_LIMIT_BURST (10); supervisor review: "
                                            "FLEXGUARD_DATABASE_URL (default sqlite:///flexguard.db), FLEXGUARD_DATABASE_TIMEOUT_S (10; then 503), "
                                            "FLEXGUARD_PHOTO_RETENTION_DAYS (7), FLEXGUARD_PURGE_INTERVAL_S, FLEXGUARD_PENDING_EXPIRY_DAYS (30), "
                                            "FLEXGUARD_TRAINING_RETENTION_DAYS (90, units with training consent), "
                                            "FLEXGUARD_TRAINING_EXPORT_DIR, "
                                            "FLEXGUARD_WEBHOOK_RETRY_BASE_S, FLEXGUARD_WEBHOOK_RETRY_MAX_S, "
                                            "FLEXGUARD_WEBHOOK_MAX_ATTEMPTS, FLEXGUARD_WEBHOOK_TIMEOUT_S, FLEXGUARD_WEBHOOK_POLL_S.")
    serve.add_argument("--model", type=Path, help="ONNX model (default: FLEXGUARD_MODEL_PATH, or the shipped model of FLEXGUARD_MODEL_VARIANT)")
    serve.add_argument("--host", help="address to bind (default: FLEXGUARD_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: FLEXGUARD_PORT or 8000)")
    serve.set_defaults(func=_cmd_serve)

    scan = commands.add_parser("scan", help="score every photo in folders into a resumable JSONL/CSV file",
                               description="Walk folders recursively and score every photo and video (recognised by its content) into --out, "
                                           "one row per file as soon as it is scored: JSON Lines, or CSV when the name ends in .csv. "
                                           "Rerunning the same command after a crash or Ctrl-C continues where it stopped. "
                                           "Hidden files and folders and files that are not images are skipped and counted.")
    scan.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="folders (walked recursively) or photos to scan")
    scan.add_argument("--out", type=Path, required=True, help="output file: .jsonl (default format) or .csv; continued if it exists")
    scan.add_argument("--include", action="append", default=[], metavar="GLOB",
                      help="scan only files matching GLOB (repeatable; case-insensitive; without '/' it matches the name "
                           "at any depth, with '/' the path under PATH)")
    scan.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip files and folders matching GLOB (repeatable; as --include)")
    scan.add_argument("--force", action="store_true", help="start --out over instead of continuing it")
    scan.add_argument("--fail-on", choices=("review", "block"), help="exit with status 1 if any file reaches this decision (for pipelines)")
    scan.add_argument("--report", type=Path, metavar="HTML", help="also write a self-contained HTML report for reviewers")
    scan.add_argument("--engine", choices=("local", "ray"), default="local",
                      help="local: this machine (default); ray: a Ray cluster through Ray Data (needs flexguard[ray])")
    scan.add_argument("--ray-address", metavar="ADDRESS", help="Ray cluster to connect to (default: start Ray on this machine)")
    scan.add_argument("--server", metavar="URL",
                      help="score through a running flexguard service instead (API key, if it needs one: FLEXGUARD_API_KEY)")
    scan.add_argument("--model", type=Path, help="ONNX model for the local and Ray engines (default: the shipped model)")
    scan.add_argument("--workers", type=int,
                      help="worker threads (each reads, decodes and scores photos), Ray actors or concurrent requests (default: CPU count)")
    scan.add_argument("--batch-size", type=int,
                      help="photos per model call or request (default: 2 with the local engine, 8 with --server or --engine ray)")
    scan.set_defaults(func=_cmd_scan)

    importer = commands.add_parser("import-folder", help="make a manifest from a folder per category",
                                   description="Write a manifest CSV from ROOT/<category>/... (category ids or 'ordinary').")
    importer.add_argument("root", type=Path, help="folder with one subfolder per category")
    importer.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    importer.set_defaults(func=_cmd_import_folder)

    admin.add_parser(commands, _cmd_admin)
    data.add_parser(commands, _cmd_data)
    return parser


def _cmd_data(args: argparse.Namespace) -> None:
    args.data_func(args)


def _cmd_admin(args: argparse.Namespace) -> None:
    from flexguard.service.review.store import ReviewError

    try:
        args.admin_func(args)
    except ReviewError as error:
        raise UserError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flexguard.datasets.manifest import ManifestError
    from flexguard.models.metadata import ModelMetadataError
    from flexguard.inference.engine import ModelLoadError
    from flexguard.service.review.database import DatabaseError

    try:
        args.func(args)
    except (UserError, ManifestError, ModelMetadataError, ModelLoadError, DatabaseError, FileNotFoundError) as error:
        print(f"flexguard {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"flexguard {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
