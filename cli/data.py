"""``flexguard data``: the data team's gathering commands (datasets/gather.py does the work).

Gathering is a loop a person drives: list a source's candidates, look at the numbered contact sheets,
add the chosen numbers under one label, look at the batch's sheets again, remove mistakes with a
reason. Each step is one command so that the loop can be followed, repeated and audited.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "flexdata"
DEFAULT_WORK = Path(".cache") / "candidates"
DEFAULT_SHEETS = Path("runs") / "sheets"
# Where `fetch` puts snapshots on the data team's machines.
DEFAULT_MIRROR = Path("/work/.mirror")
# Enough names to act on from the terminal; --missing-sources lists them all.
RESTORE_SOURCES_SHOWN = 10


def _references(args: argparse.Namespace) -> list[Path]:
    """flexdata's manifests: new photos must not be near-duplicates of them."""
    folder = args.reference
    return sorted(folder.glob("manifest*.csv")) if folder.is_dir() else []


def _cmd_candidates(args: argparse.Namespace) -> None:
    from flexguard.datasets import gather

    found = gather.candidates(args.source, args.git_dir, args.work, under=args.under,
                              reference_manifests=_references(args))
    print(f"{args.source} @ {found.commit[:12]}  licence: {found.license}")
    print(f"{found.kept} candidates, {found.duplicates} near-duplicates of known photos, "
          f"{found.skipped_small} under {gather.MIN_SHORT_SIDE} px, {found.skipped_unreadable} unreadable")
    print(f"candidates: {found.folder}")
    for sheet in found.sheets:
        print(f"sheet: {sheet}")


def _cmd_add(args: argparse.Namespace) -> None:
    from flexguard.datasets import gather

    folder = args.work / gather.source_slug(args.source)
    added = gather.add(args.batch, folder, args.category, gather.parse_indices(args.indices),
                       hard_negative=args.hard_negative, group=args.group,
                       reference_manifests=_references(args))
    print(f"added {len(added)} to {args.batch} as {args.category}{' (hard negative)' if args.hard_negative else ''}")


def _cmd_remove(args: argparse.Namespace) -> None:
    from flexguard.datasets import gather

    print(f"removed {gather.remove(args.batch, args.names, args.reason)} from {args.batch}")


def _cmd_relabel(args: argparse.Namespace) -> None:
    from flexguard.datasets import gather

    count = gather.relabel(args.batch, args.names, args.category, hard_negative=args.hard_negative)
    print(f"relabelled {count} in {args.batch} as {args.category}")


def _cmd_restore(args: argparse.Namespace) -> None:
    from flexguard.datasets import restore

    report = restore.restore(args.mirror, args.batches)
    print(f"restored {report.restored} photos; {report.present} were already there; {report.missing} still missing")
    if report.not_fetched:
        print(f"{sum(report.not_fetched.values())} photos from {len(report.not_fetched)} sources not under {args.mirror}, "
              f"most first: " + ", ".join(f"{s} ({n})" for s, n in report.not_fetched.most_common(RESTORE_SOURCES_SHOWN)))
    for reason, photos in (("not in the snapshot", report.not_in_snapshot), ("not the labelled photo", report.changed)):
        if photos:
            print(f"{len(photos)} {reason}: " + "; ".join(photos[:RESTORE_SOURCES_SHOWN]))
    if args.missing_sources:
        args.missing_sources.parent.mkdir(parents=True, exist_ok=True)
        args.missing_sources.write_text("".join(f"{s}\t{n}\n" for s, n in report.not_fetched.most_common()),
                                        encoding="utf-8")
        print(f"sources to fetch, most photos first: {args.missing_sources}")


def _cmd_sheets(args: argparse.Namespace) -> None:
    from flexguard.datasets import gather

    for sheet in gather.sheets(args.batch, args.out, args.model):
        print(f"sheet: {sheet}")


def add_parser(commands: argparse._SubParsersAction, run) -> None:
    data = commands.add_parser(
        "data", help="gather labelled photo batches (candidates, add, remove, relabel, sheets, restore)",
        description="Gather photos from public sources into datasets/batches/<batch>/ with provenance, "
                    "near-duplicate checks and the holdout guard. Labelling rules: datasets/LABELLING.md.")
    data.set_defaults(func=run)
    steps = data.add_subparsers(dest="data_command", required=True, metavar="STEP")

    def step(name: str, help_text: str, func) -> argparse.ArgumentParser:
        parser = steps.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(data_func=func)
        parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                            help=f"flexdata folder whose photos new ones must not duplicate (default: {DEFAULT_REFERENCE})")
        return parser

    listing = step("candidates", "decode a source's photos into numbered candidates and contact sheets",
                   _cmd_candidates)
    listing.add_argument("source", help="OWNER/NAME of the public repository (checked by the holdout guard)")
    listing.add_argument("git_dir", type=Path, help="its git directory (what `fetch` returned)")
    listing.add_argument("--under", default="", help="only this folder of the repository")
    listing.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"where candidates go (default: {DEFAULT_WORK})")

    adding = step("add", "add candidates, by number, to a batch under one label", _cmd_add)
    adding.add_argument("batch", help="batch name, e.g. b3-bags (datasets/batches/<batch>/)")
    adding.add_argument("source", help="OWNER/NAME, as given to `candidates`")
    adding.add_argument("category", help="luxury_car, designer_bag, jewelry_watch, luxury_travel or ordinary")
    adding.add_argument("indices", nargs="+", help="candidate numbers: 3 5-7 10")
    adding.add_argument("--hard-negative", action="store_true", help="an ordinary photo that looks like luxury")
    adding.add_argument("--group", default="", help="style group (default: the source); e.g. OWNER/NAME:brand")
    adding.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"where candidates are (default: {DEFAULT_WORK})")

    removing = step("remove", "take photos out of a batch, saying why", _cmd_remove)
    removing.add_argument("batch")
    removing.add_argument("names", nargs="+", help="manifest paths or file names")
    removing.add_argument("--reason", required=True, help="why (kept in the batch's removed.csv)")

    relabelling = step("relabel", "change the label of photos in a batch", _cmd_relabel)
    relabelling.add_argument("batch")
    relabelling.add_argument("category")
    relabelling.add_argument("names", nargs="+", help="manifest paths or file names")
    relabelling.add_argument("--hard-negative", action="store_true")

    sheets = step("sheets", "contact sheets of a batch, one run per label, sorted by a model's risk", _cmd_sheets)
    sheets.add_argument("batch")
    sheets.add_argument("--out", type=Path, default=DEFAULT_SHEETS, help=f"folder (default: {DEFAULT_SHEETS})")
    sheets.add_argument("--model", type=Path, help="sort each label's photos by this ONNX model's risk (highest first), "
                                                   "captioned with it, so mislabelled photos stand out")

    restoring = step("restore", "make a batch's missing photos again from its sources' snapshots, by the manifest's "
                                "provenance (commit, path), checked against the recorded hash", _cmd_restore)
    restoring.add_argument("batches", nargs="*", metavar="batch", help="batch names (default: every batch)")
    restoring.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR,
                           help=f"folder of fetched snapshots, <owner+name>/repo (default: {DEFAULT_MIRROR})")
    restoring.add_argument("--missing-sources", type=Path,
                           help="write the sources still to fetch here, one 'OWNER/NAME<tab>photos' per line, most first")
