"""``recfeat training-set SPINE --features ... --out OUT``: point-in-time features for a spine (docs/python-api.md)."""
from __future__ import annotations

from orchestration.cli_common import CliError, settings_for, warehouse_for


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        for part in item.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise CliError(f"bad {what} {part!r}: use TABLE=VALUE")
            out[key.strip()] = value.strip()
    return out


def cmd_training_set(args) -> int:
    from pipelines.spark import get_spark
    from pipelines.training_set import FeatureError, training_set

    settings = settings_for(args)
    wh = warehouse_for(settings)
    features = [f for item in args.features for f in item.split(",") if f.strip()]
    if args.versions and "=" not in args.versions:
        versions = args.versions  # an earlier output or its sidecar
    else:
        try:
            versions = {k: int(v) for k, v in _pairs([args.versions] if args.versions else [], "version").items()} or None
        except ValueError:
            raise CliError(f"bad --versions {args.versions!r}: use TABLE=N,... or the path of an earlier output") from None
    try:
        result = training_set(get_spark(settings.spark), wh, args.spine, features, ts_column=args.ts_column,
                              max_len=args.max_len, ttl=_pairs(args.ttl, "ttl") or None, versions=versions,
                              settings=settings, out=args.out, overwrite=args.overwrite,
                              history_ties=args.history_ties)
    except FeatureError as exc:
        raise CliError(str(exc)) from None
    meta = result.metadata
    print(f"training set: {meta['spine_rows']:,} rows -> {result.path}")
    print("versions read: " + ", ".join(f"{t} v{v}" for t, v in meta["versions"].items()))
    for table, used in meta["builds"].items():
        print(f"{table} builds used: " + (", ".join(f"v{b['version']} ({b['valid_from']})" for b in used) or "none"))
    for key, value in meta["report"].items():
        if key.endswith("_rows_before_first_cutoff"):
            print(f"{key.replace('_', ' ')}: {value:,}")
    for column, n in meta["report"]["non_null"].items():
        print(f"  {column}: {n:,} rows")
    print(f"spine sha256 {meta['spine_sha256'][:16]}…, code {meta['code_version']}")
    return 0


def add_parser(sub, warehouse_opt) -> None:
    """The ``training-set`` subcommand's parser (registered by ``orchestration.cli``)."""
    sp = sub.add_parser("training-set", help="point-in-time features for a spine of examples (Parquet/CSV), written as Parquet")
    sp.add_argument("spine", metavar="SPINE", help="Parquet file or directory, or CSV, with user_id, [item_id], the example time")
    sp.add_argument("--features", required=True, action="append", metavar="F,...",
                    help="features: user_sequences, users.*, items.COL, lookalike_users, recall_items, "
                         "watch_time_labels.LABEL, duration_stats.COL (comma-separated, repeatable)")
    sp.add_argument("--out", required=True, metavar="OUT", help="output directory (Parquet files + _training_set.json)")
    sp.add_argument("--ts-column", default="event_ts", help="the spine's example-time column (UTC; default event_ts)")
    sp.add_argument("--max-len", type=int, default=None, metavar="N", help="history length (default sequences.max_len)")
    sp.add_argument("--ttl", action="append", metavar="TABLE=AGE", help="maximum age of a table's values, e.g. lookalike_users=7d (repeatable)")
    sp.add_argument("--versions", metavar="TABLE=N,...|PATH",
                    help="pin table versions, or reproduce an earlier output (its directory or _training_set.json)")
    sp.add_argument("--history-ties", choices=("exclude", "log_order"), default="exclude",
                    help="exclude (default): histories hold the events strictly before the example time; "
                    "log_order: a row naming an event (event_id) gets that event's user_sequences history")
    sp.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    warehouse_opt(sp)
    sp.set_defaults(func=cmd_training_set)
