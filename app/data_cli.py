"""``flipscope data register PATH --label COLUMN [--owner EMAIL]`` (registered in ``app.cli.COMMANDS``).

Makes a data set file that is already on the server an upload, without sending it through a
browser: for tables too large to upload. The file must be inside the folder the operator named in
FLIPSCOPE_DATA_IMPORT_DIR (unset: the command refuses). It is checked like an upload, against the
FLIPSCOPE_MAX_UPLOAD_MB, FLIPSCOPE_MAX_ROWS and FLIPSCOPE_MAX_COLUMNS of this command's
environment (raise them here for a large file; the limits it passed are recorded with it, so
workers and dashboards with smaller ones still read it). A file of up to 64 MiB is copied into
the upload store; a larger one stays where it is and must not change (``app.uploads``): every
machine that reads it must see it at the same path.

The command line is the operator: the upload belongs to ``--owner`` (a signed-in user's address),
or to nobody, which lets every user view it and run jobs on it (``app.access``).
"""

from __future__ import annotations

import argparse
import sys

from app.config import settings


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True)
    r = sub.add_parser(
        "register",
        help="make a data set file in FLIPSCOPE_DATA_IMPORT_DIR an upload; prints its id",
    )
    r.add_argument(
        "path", help="the file, relative to FLIPSCOPE_DATA_IMPORT_DIR (or absolute, inside it)"
    )
    r.add_argument("--label", required=True, help="the label column (the class the model predicts)")
    r.add_argument(
        "--owner", default=None, metavar="EMAIL",
        help="the signed-in user it belongs to (default: nobody's, open to every user)",
    )  # fmt: skip
    r.add_argument(
        "--kind", action="append", default=[], metavar="COLUMN=KIND",
        help="override a column's kind: continuous, categorical or drop (repeat)",
    )  # fmt: skip


def parse_kinds(items: list[str]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for item in items:
        column, sep, kind = item.rpartition("=")
        if not sep or not column.strip() or kind not in ("continuous", "categorical", "drop"):
            raise ValueError(
                f"--kind {item!r}: write COLUMN=KIND with KIND continuous, categorical or drop"
            )
        kinds[column.strip()] = kind
    return kinds


def data_main(args: argparse.Namespace) -> int:
    from app.uploads import COPY_UP_TO, UploadWriteError, upload_store
    from datasets import DataValidationError

    cfg = settings()
    if cfg.data_import_dir is None:
        print(
            "error: registering server files is off; the operator sets FLIPSCOPE_DATA_IMPORT_DIR "
            "to the folder data sets may be registered from",
            file=sys.stderr,
        )
        return 2
    owner = args.owner.strip().lower() if args.owner else None
    if owner is not None and (
        owner.count("@") != 1 or owner.startswith("@") or owner.endswith("@")
    ):
        print(f"error: --owner {args.owner!r} is not an e-mail address", file=sys.stderr)
        return 2
    try:
        kinds = parse_kinds(args.kind)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = upload_store()
    try:
        upload_id, dataset = store.register_dataset(
            args.path, cfg.data_import_dir, args.label, kinds or None, owner
        )
    except DataValidationError as exc:
        print(
            f"error: {exc}\n(limits: FLIPSCOPE_MAX_UPLOAD_MB={cfg.max_upload_mb}, "
            f"FLIPSCOPE_MAX_ROWS={cfg.max_rows}, FLIPSCOPE_MAX_COLUMNS={cfg.max_columns} in this "
            "command's environment)",
            file=sys.stderr,
        )
        return 1
    except UploadWriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    info = store.info(upload_id)
    summary = dataset.summary()
    how = (
        "a reference to the file, which must not change"
        if info.source
        else f"copied into the upload store (files up to {COPY_UP_TO // 2**20} MiB are)"
    )
    print(
        f"registered {info.filename!r} as upload {upload_id}: "
        f"{summary['rows_train'] + summary['rows_test']:,} rows, {summary['features']} features, "
        f"label {args.label!r}, {dataset.n_classes} classes; {how}; owner {owner or 'nobody (every user)'}.\n"
        f"Jobs: flipscope jobs submit emap --dataset upload:{upload_id} --model ...\n"
        f"Dashboard: the Data & model page at /?data={upload_id}",
        flush=True,
    )
    return 0


add_arguments = add_data_arguments
main = data_main
