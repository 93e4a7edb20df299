"""The ``streamrec`` command line. The only place that prints to users."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from streamrec.kernel import logs
from streamrec.kernel.errors import StreamrecError
from streamrec.kernel.reachability import require
from streamrec.kernel.settings import Settings, get_settings

CONNECT_TIMEOUT_S = 120.0


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from infra.stack import Stack  # noqa: PLC0415

    password = settings.redis.password.get_secret_value() if settings.redis.password else None
    stack = Stack(Path(args.dir), redis_password=password)
    if args.action == "up":
        stack.up(kafka_port=args.kafka_port, redis_port=args.redis_port)
    elif args.action == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    services = stack.status()
    for service in services:
        print(service.describe())
    if args.action == "up":
        kafka, redis = services
        print(f"export STREAMREC_KAFKA__BOOTSTRAP=127.0.0.1:{kafka.port}")
        print(f"export STREAMREC_REDIS__URL=redis://127.0.0.1:{redis.port}/0")
    return 0 if all(s.answering for s in services) else 1


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.app.worker import run_worker  # noqa: PLC0415

    require(settings, ("kafka", "redis"), args.connect_timeout)
    run_worker(settings, role=args.role,
               ready_file=Path(args.ready_file) if args.ready_file else None)
    return 0


def _state(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.state.dump import dump_state  # noqa: PLC0415

    require(settings, ("redis",))
    text = asyncio.run(dump_state(settings))
    if args.out:
        Path(args.out).write_bytes(text)
    else:
        sys.stdout.write(text.decode() + "\n")
    return 0


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.app.replay import produce_file  # noqa: PLC0415

    require(settings, ("kafka",))
    fmt = data_format(args)
    count, bad = asyncio.run(produce_file(settings, args.file, fmt, limit=args.limit,
                                          rate=args.rate, progress=not args.quiet))
    if report := bad.report(args.file):
        print(report, file=sys.stderr)
    print(f"published {count} events")
    return 0


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.app.tail import tail  # noqa: PLC0415

    require(settings, ("kafka",), args.connect_timeout)
    topic = args.topic or settings.topics.recommendations
    asyncio.run(tail(settings, topic, titles=args.titles, limit=args.limit,
                     from_beginning=args.from_beginning, idle_exit_s=args.idle_exit))
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.app.demo import run_demo  # noqa: PLC0415

    return run_demo(users=args.users, timeout_s=args.timeout, rate=args.rate,
                    offline=args.offline)


def _items(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.kernel.clients import redis_client  # noqa: PLC0415
    from streamrec.state.keys import Keys  # noqa: PLC0415

    async def run() -> list[str]:
        redis = redis_client(settings.redis)
        key = Keys(settings.redis.prefix).blocked
        try:
            if args.action == "block":
                await redis.sadd(key, *args.ids)
            elif args.action == "unblock":
                await redis.srem(key, *args.ids)
            members: set[Any] = await redis.smembers(key)  # type: ignore[misc]
            return sorted(x.decode() for x in members)
        finally:
            await redis.aclose()

    if args.action in ("block", "unblock") and not args.ids:
        print(f"streamrec items {args.action}: give at least one item id", file=sys.stderr)
        return 2
    require(settings, ("redis",))
    blocked = asyncio.run(run())
    print(f"blocked items ({len(blocked)}): " + (", ".join(blocked) if blocked else "none"))
    return 0


def _users(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.app.forget import forget_users  # noqa: PLC0415

    require(settings, ("redis", "kafka"))
    deleted = asyncio.run(forget_users(settings, list(dict.fromkeys(args.ids))))
    for user, n in deleted.items():
        print(f"forgot {user}: {n} key(s) deleted, tombstone on "
              f"{settings.topics.recommendations}")
    return 0


def _redis_acl(args: argparse.Namespace, settings: Settings) -> int:
    import os  # noqa: PLC0415

    from streamrec.state.access import ROLES, acl_lines  # noqa: PLC0415
    from streamrec.state.keys import Keys  # noqa: PLC0415

    names = {role: f"STREAMREC_ACL_PASSWORD_{role.upper()}" for role in ROLES}
    missing = [name for name in names.values() if not os.environ.get(name)]
    if missing:
        print(f"streamrec redis-acl: set {', '.join(missing)} (each role's password; the "
              "file holds their SHA-256 only)", file=sys.stderr)
        return 2
    lines = acl_lines(Keys(settings.redis.prefix),
                      {role: os.environ[name] for role, name in names.items()})
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {len(lines)} ACL users to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _trainer(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.app.trainer import Trainer  # noqa: PLC0415
    from streamrec.kernel import metrics  # noqa: PLC0415

    if args.time_budget:
        settings.trainer.time_budget_s = args.time_budget
    require(settings, ("redis", "kafka"), 0.0 if args.once else args.connect_timeout)
    trainer = Trainer(settings)
    if args.once:
        result = asyncio.run(trainer.run_once())
        print(f"trainer: {result.outcome} version={result.version} users={result.users} "
              f"items={result.items} new={result.new} current={result.current} "
              f"seconds={result.seconds:.1f}")
        return 0 if result.outcome != "rejected" else 1
    metrics.serve_metrics(settings.metrics.port)
    asyncio.run(trainer.run_forever(args.interval or settings.trainer.interval_s))
    return 0


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.app.train_cli import parse_overrides, train_main  # noqa: PLC0415

    try:
        overrides = parse_overrides(args.set or [])
    except ValueError as exc:
        print(f"streamrec train: {exc}", file=sys.stderr)
        return 2
    return train_main(args.data, data_format(args), args.time_budget, args.out,
                      overrides=overrides, progress=not args.no_progress)


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.app.train_cli import evaluate_main  # noqa: PLC0415

    return evaluate_main(args.data, data_format(args), args.model, args.checkpoint,
                         args.json_out)


def _replay_eval(args: argparse.Namespace, settings: Settings) -> int:
    import json  # noqa: PLC0415

    from streamrec.app.replay_eval import ReplayEval, load_events  # noqa: PLC0415

    sources = ["hybrid", "markov", "sequence", "popularity"] if args.sources == ["all"] \
        else args.sources
    events = load_events(args.data, data_format(args))
    if args.events:
        events = events[:args.events]
    report = ReplayEval(events, args.limit, args.rate, sources, args.train_budget).run()
    text = json.dumps(report, indent=2)
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(text)
    print(f"{'source':<12}{'hr@10':>8}{'ndcg@10':>9}{'coverage':>10}{'fresh p50':>11}"
          f"{'fresh p99':>11}{'lists':>8}")
    for source, row in report["sources"].items():
        print(f"{source:<12}{row['hr@10']:>8.4f}{row['ndcg@10']:>9.4f}{row['coverage']:>10.4f}"
              f"{row['freshness_p50_s']:>10.3f}s{row['freshness_p99_s']:>10.3f}s"
              f"{row['scored_lists']:>8}")
    return 0


def _connect_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT_S,
                   help="seconds to wait for Kafka/Redis at start (default 120)")


BUILT_IN_FORMATS = ("ml100k", "seq")
FILE_FORMATS = ("csv", "jsonl", "parquet")


def _data_format(p: argparse.ArgumentParser, extra: tuple[str, ...] = ()) -> None:
    """--format and the options of your own files (recmodels.adapters)."""
    from recmodels.adapters import PRESETS  # noqa: PLC0415

    p.add_argument("--format", choices=[*BUILT_IN_FORMATS, *extra, *FILE_FORMATS],
                   help="ml100k (MovieLens ratings), seq ('user item [item ...]' lines), "
                        "or your own csv, jsonl, parquet (with --columns, or a --preset)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a known layout: recbole (.inter), ecommerce (event_time,event_type,"
                        "product_id,...), sessions (session JSONL), retailrocket")
    p.add_argument("--columns", metavar="FIELD=COLUMN,...",
                   help="where user, item, type, ts, session and event_id are (default "
                        "user_id, item_id, type, ts; type= : no type column, all views)")
    p.add_argument("--types", metavar="RAW=TYPE,...",
                   help="raw type values as view, click, purchase or skip "
                        "(e.g. cart=click,remove_from_cart=skip)")
    p.add_argument("--ts-unit", choices=["auto", "s", "ms", "iso"],
                   help="timestamps: epoch seconds, milliseconds, ISO-8601; auto: numbers "
                        "below 10^11 are seconds (default: the preset's, else auto)")
    p.add_argument("--delimiter", help="CSV field separator (default: tab for .tsv/.inter, "
                                       "else comma; \\t for tab)")


def data_format(args: argparse.Namespace) -> Any:
    """The --format of the command line: a built-in format name, or the Layout of your own
    files (``recmodels.adapters.Layout``)."""
    from recmodels.adapters import make_layout  # noqa: PLC0415

    own = (args.columns, args.types, args.ts_unit, args.delimiter)
    if args.preset is None and args.format not in FILE_FORMATS:
        if args.format is None:
            raise StreamrecError("give --format (or a --preset)")
        if any(x is not None for x in own):
            raise StreamrecError(f"--format {args.format} has a fixed layout: --columns, "
                                 "--types, --ts-unit and --delimiter are for csv, jsonl "
                                 "and parquet files")
        return args.format
    return make_layout(args.format, args.preset, *own)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamrec", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="embedded local Kafka-compatible broker + Redis")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--kafka-port", type=int, default=9092)
    stack.add_argument("--redis-port", type=int, default=6379)
    stack.add_argument("--dir", default=".run/stack", help="run folder (pid files, logs)")
    stack.set_defaults(func=_stack)

    worker = sub.add_parser("worker", help="run the ingest, state and serving agents")
    worker.add_argument("--ready-file", help="write this file once the worker is ready")
    worker.add_argument("--role", choices=["all", "stream", "serving"], default="all",
                        help="stream: ingest + state; serving: recommendations (own group); "
                             "all: both in one process (default)")
    _connect_timeout(worker)
    worker.set_defaults(func=_worker)

    state = sub.add_parser("state", help="inspect the online state")
    state.add_argument("action", choices=["dump"])
    state.add_argument("--out", help="write the JSON here instead of stdout")
    state.set_defaults(func=_state)

    produce = sub.add_parser("produce", help="replay a data set as events, in time order")
    produce.add_argument("file", help="data file, or 'synthetic' (with --format synthetic)")
    _data_format(produce, extra=("synthetic",))
    produce.add_argument("--limit", type=int, help="publish at most N events")
    produce.add_argument("--rate", type=float, help="events per second (default: unthrottled)")
    produce.add_argument("--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(func=_produce)

    tail_p = sub.add_parser("tail", help="print recommendations (or any topic) as they arrive")
    tail_p.add_argument("topic", nargs="?", help="topic (default: recommendations)")
    tail_p.add_argument("--titles", help="item titles file (ml-100k.item) for readable output")
    tail_p.add_argument("--limit", type=int, help="stop after N messages")
    tail_p.add_argument("--from-beginning", action="store_true")
    tail_p.add_argument("--idle-exit", type=float, help="stop after this many idle seconds")
    _connect_timeout(tail_p)
    tail_p.set_defaults(func=_tail)

    items = sub.add_parser("items", help="operator's blocked-items list")
    items.add_argument("action", choices=["block", "unblock", "list"])
    items.add_argument("ids", nargs="*", help="item ids")
    items.set_defaults(func=_items)

    users = sub.add_parser("users", help="erasure: forget users (state, lists, dedupe)")
    users.add_argument("action", choices=["forget"])
    users.add_argument("ids", nargs="+", help="user ids")
    users.set_defaults(func=_users)

    acl = sub.add_parser("redis-acl", help="Redis ACL users per role (least privilege)")
    acl.add_argument("--out", help="write the ACL file here instead of stdout")
    acl.set_defaults(func=_redis_acl)

    trainer = sub.add_parser("trainer", help="retrain SASRec on the live sequences and publish")
    trainer.add_argument("--once", action="store_true", help="one round, then exit")
    trainer.add_argument("--interval", type=float, help="seconds between rounds")
    trainer.add_argument("--time-budget", type=float, help="training seconds per round")
    _connect_timeout(trainer)
    trainer.set_defaults(func=_trainer)

    train_p = sub.add_parser("train", help="train SASRec offline on a data set")
    train_p.add_argument("--data", required=True)
    _data_format(train_p)
    train_p.add_argument("--time-budget", type=float, default=1080.0, help="seconds")
    train_p.add_argument("--out", required=True, help="checkpoint + metrics.json + PNG here")
    train_p.add_argument("--set", action="append", metavar="NAME=VALUE",
                         help="a hyperparameter other than the default (SASRecConfig field, "
                              "e.g. --set max_len=50 --set loss=sampled); repeatable")
    train_p.add_argument("--no-progress", action="store_true", help="no progress bars")
    train_p.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a model with the offline protocol")
    evaluate.add_argument("--data", required=True)
    _data_format(evaluate)
    evaluate.add_argument("--model", choices=["popularity", "markov", "sasrec", "hybrid"],
                          required=True, help="hybrid: the SASRec checkpoint sharpened by "
                          "co-occurrence counts, its two settings chosen on validation")
    evaluate.add_argument("--checkpoint", help="checkpoint folder (sasrec, hybrid)")
    evaluate.add_argument("--json-out", required=True)
    evaluate.set_defaults(func=_evaluate)

    rep = sub.add_parser("replay-eval", help="prequential evaluation through the live pipeline")
    rep.add_argument("--data", required=True)
    _data_format(rep)
    rep.add_argument("--events", type=int, help="use only the first N events of the data")
    rep.add_argument("--limit", type=int, default=20_000, help="events replayed (the last N)")
    rep.add_argument("--rate", type=float, default=500.0, help="events per second replayed")
    rep.add_argument("--sources", nargs="+", default=["all"],
                     choices=["all", "hybrid", "markov", "sequence", "popularity"])
    rep.add_argument("--train-budget", type=float, default=300.0,
                     help="seconds to train SASRec on the events before the replayed part")
    rep.add_argument("--json-out", required=True)
    rep.set_defaults(func=_replay_eval)

    demo = sub.add_parser("demo", help="embedded stack + worker + MovieLens replay, live output")
    demo.add_argument("--users", type=int, default=100, help="stop after this many users")
    demo.add_argument("--timeout", type=float, default=280.0, help="stop after this many s")
    demo.add_argument("--rate", type=float, default=500.0, help="events per second")
    demo.add_argument("--offline", action="store_true", help="never download data")
    demo.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = get_settings()
    logs.configure(settings.log_level)
    try:
        return int(args.func(args, settings))
    except StreamrecError as exc:
        print(f"streamrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
