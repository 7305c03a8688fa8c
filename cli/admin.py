"""``flexguard admin``: the supervisor-review database from the operator's shell.

For whoever runs the service: set up units and keys before anyone has an admin key, revoke a lost
key, purge photos on demand, export the audit trail for inspectors, and migrate the schema. It works
on the database directly (FLEXGUARD_DATABASE_URL or --database), so it needs no running service, and
it records the operator (``cli:<login>``) as the actor in the audit trail.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator

PURGE_HELP_DAYS = "days after the decision (default: FLEXGUARD_PHOTO_RETENTION_DAYS, 7)"


def _settings():
    from pydantic import ValidationError

    from flexguard.service.settings import explain, get_settings

    try:
        return get_settings()
    except ValidationError as error:
        raise _user_error(explain(error)) from None


def _database_url(args: argparse.Namespace) -> str:
    return args.database or _settings().database_url


def _store(args: argparse.Namespace):
    """The review store, migrated to the newest schema; a database that does not exist yet is refused
    (one line naming the URL and the file looked for) unless the action is ``migrate`` or ``--create``."""
    from flexguard.service.review.database import migrate, open_database, require_existing
    from flexguard.service.review.store import ReviewStore

    engine = open_database(_database_url(args))
    if not (args.action == "migrate" or args.create):
        require_existing(engine)
    migrate(engine)
    return ReviewStore(engine)


def _operator():
    from flexguard.service.review.store import Principal

    return Principal.command_line(getpass.getuser())


def _cmd_migrate(args: argparse.Namespace) -> None:
    from flexguard.service.review.database import current_revision

    store = _store(args)
    print(f"review database at revision {current_revision(store.engine)}")


def _cmd_unit_add(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from flexguard.service.review.schemas import UnitIn

    try:
        unit = UnitIn(id=args.id, name=args.name)
    except ValidationError:
        raise _user_error(f"unit id {args.id!r}: use lower-case letters, digits and '-', up to 63 characters") from None
    created = _store(args).create_unit(_operator(), unit.id, unit.name)
    print(f"unit {created.id}: {created.name}")


def _cmd_unit_list(args: argparse.Namespace) -> None:
    for unit in _store(args).units():
        print(f"{unit.id}\t{unit.name}\ttraining consent: {'on' if unit.training_consent else 'off'}")


def _cmd_unit_policy(args: argparse.Namespace) -> None:
    import json

    store = _store(args)
    if args.clear:
        overrides = None
    else:
        overrides = dict(store.unit_policy(args.unit) or {})
        overrides.update({category: "off" for category in args.off})
        overrides.update(args.thresholds)
    unit = store.set_unit_policy(_operator(), args.unit, overrides)
    print(f"policy for {unit.id}: " + (json.dumps(unit.policy) if unit.policy else "the model's thresholds for every category"))


def _category_thresholds(text: str) -> tuple[str, dict[str, float]]:
    category, _, pair = text.partition("=")
    try:
        review, block = (float(value) for value in pair.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give CATEGORY=REVIEW,BLOCK, e.g. designer_bag=0.7,0.95, not {text!r}") from None
    return category, {"review": review, "block": block}


def _cmd_training_consent(args: argparse.Namespace) -> None:
    unit = _store(args).set_training_consent(_operator(), args.unit, args.consent == "on")
    kept = ("its reviewer-labelled photos are kept for the data team" if unit.training_consent
            else "its photos are purged as usual; labelled photos kept so far go at the next purge")
    print(f"training consent for {unit.id}: {args.consent} ({kept})")


def _cmd_export_training(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from flexguard.service.review.training_export import export_training

    store = _store(args)
    operator = _operator()
    total = store.count_training_photos(operator, args.since, args.unit)
    with tqdm(total=total, desc="exporting labelled photos", unit="photo", file=sys.stderr) as progress:
        report = export_training(store, operator, args.out, args.since, args.unit, advance=progress.update)
    units = ", ".join(f"{unit} {count}" for unit, count in sorted(report.by_unit.items())) or "none new"
    print(f"exported {report.photos} photo{'' if report.photos == 1 else 's'} ({units}) to {args.out}; {report.manifest} lists {report.listed}; "
          f"train with: make model DATA=\"... {report.manifest}\"")


def _cmd_key_add(args: argparse.Namespace) -> None:
    from flexguard.service.review.tables import Role

    created = _store(args).create_key(_operator(), Role(args.role), args.unit, args.label)
    print(created.key)
    key = created.record
    print(f"{key.role} key {key.prefix} for {key.unit or 'all units'}: shown this once, "
          "flexguard keeps only its digest", file=sys.stderr)


def _cmd_key_list(args: argparse.Namespace) -> None:
    for key in _store(args).keys(args.unit):
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        print(f"{key.prefix}\t{key.role}\t{key.unit or '-'}\t{state}\t{key.label}")


def _cmd_key_revoke(args: argparse.Namespace) -> None:
    key = _store(args).revoke_key(_operator(), args.prefix)
    print(f"revoked {key.prefix} ({key.role}, {key.unit or 'all units'})")


def _cmd_purge(args: argparse.Namespace) -> None:
    days = args.retention_days if args.retention_days is not None else _settings().photo_retention_days
    store = _store(args)
    pending_days = _settings().pending_expiry_days
    expired = store.expire(_operator(), timedelta(days=pending_days))
    training_days = _settings().training_retention_days
    report = store.purge(_operator(), timedelta(days=days), timedelta(days=training_days))
    print(f"expired {expired} submissions pending more than {pending_days:g} days (their photos deleted); "
          f"deleted {report.photos} photos of {report.submissions} submissions decided more than {days:g} days ago "
          f"({report.kept_for_training} labelled photos kept for training, by unit consent); deleted "
          f"{report.training_photos} training photos past {training_days:g} days or without consent; "
          "their records and audit events stay")


def _cmd_audit(args: argparse.Namespace) -> None:
    from flexguard.service.review.audit_export import audit_lines

    lines: Iterator[str] = audit_lines(_store(args).audit_events(args.since, args.unit), args.format)
    if args.out is None:
        sys.stdout.writelines(lines)
        return
    # Written beside the target and renamed, so an interrupted export never leaves half a file.
    partial = args.out.with_name(args.out.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as out:
        out.writelines(lines)
    partial.replace(args.out)
    print(f"wrote {args.out}", file=sys.stderr)


def _user_error(message: str) -> Exception:
    from flexguard.cli import UserError

    return UserError(message)


def _since(text: str) -> datetime:
    from datetime import timezone

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-01 or 2026-11-01T08:00+07:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def add_parser(commands: argparse._SubParsersAction, handle: Callable[[argparse.Namespace], None]) -> None:
    """Adds ``admin`` and its subcommands; ``handle`` runs the chosen one (and turns errors into one line)."""
    admin = commands.add_parser(
        "admin", help="manage the supervisor-review database: units, keys, purge, audit export",
        description="Work on the supervisor-review database directly (FLEXGUARD_DATABASE_URL, or --database): "
                    "units, submit/review/admin keys, the photo purge, the audit export, migrations. "
                    "The operator's login is recorded as the actor.",
    )
    admin.add_argument("--database", metavar="URL", help="database URL (default: FLEXGUARD_DATABASE_URL, or sqlite:///flexguard.db)")
    admin.add_argument("--create", action="store_true",
                       help="create the database if it does not exist yet (otherwise only `migrate` creates one)")
    actions = admin.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str, func: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(func=handle, admin_func=func)
        return parser

    action("migrate", "create the database or bring its schema up to date (the service does this on start too)", _cmd_migrate)

    unit = action("unit-add", "add a unit (OPD)", _cmd_unit_add)
    unit.add_argument("id", help="short id, e.g. dinkes")
    unit.add_argument("name", help="full name, e.g. 'Dinas Kesehatan'")
    action("unit-list", "list the units", _cmd_unit_list)

    key = action("key-add", "make a key and print it (the only time it is shown)", _cmd_key_add)
    key.add_argument("--role", choices=("submit", "review", "admin"), required=True,
                     help="submit: an upload tool of the unit; review: the unit's head; admin: manages units and keys")
    key.add_argument("--unit", help="the unit (submit and review keys)")
    key.add_argument("--label", default="", help="whose key, e.g. 'Kepala Dinas' (shown in lists and the audit trail)")
    policy = action("unit-policy", "give a unit its own thresholds per category, or turn categories off (e.g. "
                                   "luxury_travel for a tourism office); the rest keep the model's", _cmd_unit_policy)
    policy.add_argument("unit", help="the unit, e.g. dispar")
    policy.add_argument("--off", action="append", default=[], metavar="CATEGORY",
                        help="a category that never leads to review for this unit (repeatable)")
    policy.add_argument("--thresholds", action="append", default=[], type=_category_thresholds,
                        metavar="CATEGORY=REVIEW,BLOCK", help="a category's own thresholds, e.g. designer_bag=0.7,0.95 (repeatable)")
    policy.add_argument("--clear", action="store_true", help="back to the model's thresholds for every category")
    consent = action("training-consent", "keep a unit's reviewer-labelled photos for the data team (on), or not (off, "
                                         "the default); see FLEXGUARD_TRAINING_RETENTION_DAYS", _cmd_training_consent)
    consent.add_argument("unit", help="the unit, e.g. dinkes")
    consent.add_argument("consent", choices=("on", "off"))
    export = action("export-training", "write the reviewer-labelled photos of consenting units as a training batch "
                                       "(photos and manifest.csv), then delete them here; rerun an interrupted "
                                       "export with the same --out", _cmd_export_training)
    export.add_argument("--out", type=Path, required=True, help="folder of the batch (made if missing)")
    export.add_argument("--since", type=_since, metavar="TIME", help="only posts decided at or after this ISO 8601 time")
    export.add_argument("--unit", help="only this unit's photos")
    keys = action("key-list", "list keys by prefix (the keys themselves are not stored)", _cmd_key_list)
    keys.add_argument("--unit", help="only this unit's keys")
    revoke = action("key-revoke", "revoke a key: it stops working at once", _cmd_key_revoke)
    revoke.add_argument("prefix", help="the key's prefix, as key-list shows it")

    purge = action("purge", "expire submissions pending too long (FLEXGUARD_PENDING_EXPIRY_DAYS) and delete the stored "
                            "photos of submissions decided more than the retention ago", _cmd_purge)
    purge.add_argument("--retention-days", type=float, metavar="DAYS", help=PURGE_HELP_DAYS)

    audit = action("audit", "export the audit trail (every state change) as JSON Lines or CSV", _cmd_audit)
    audit.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="jsonl (default) or csv")
    audit.add_argument("--since", type=_since, metavar="TIME", help="only events at or after this ISO 8601 time (UTC if no zone)")
    audit.add_argument("--unit", help="only this unit's events")
    audit.add_argument("--out", type=Path, help="file to write (default: standard output)")
