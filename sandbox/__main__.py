"""`python -m sandbox`: the simulated Revenue Context Engine, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from sandbox.aws import AwsSandbox
from sandbox.service import make_server
from sandbox.simulator import Dependencies, Simulator
from sandbox.state import SandboxState


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--http-port", type=int, required=True, help="the service's HTTP port")
    parser.add_argument("--moto-port", type=int, help="start moto (AWS) in-process on this port")
    parser.add_argument(
        "--heal-delay",
        type=float,
        default=8.0,
        help="seconds an RDS reboot or failover takes (default 8)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--iam",
        action="store_true",
        help="moto enforces deploy/iam/'s policies; the worker's keys: AWS_ACCESS_KEY_ID/SECRET",
    )
    args = parser.parse_args(argv)
    if args.heal_delay < 0:
        parser.error("--heal-delay must be >= 0")
    return args


def dependencies_from_env() -> Dependencies:
    return Dependencies(
        database_url=os.environ.get("DATABASE_URL") or None,
        redis_url=os.environ.get("REDIS_URL") or None,
        kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
    )


def wait_for_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):  # a timeout keeps the main thread responsive to signals
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = SandboxState(heal_delay=args.heal_delay)
    state.slack_bot_token = os.environ.get("SLACK_BOT_TOKEN") or None  # the Slack twin's
    sim = Simulator(state, dependencies_from_env())
    try:
        aws = None
        if args.moto_port:
            db = sim.db_failover
            worker_keys = (
                (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
                if args.iam
                else None
            )
            aws = AwsSandbox(
                args.host,
                args.moto_port,
                sim.state,
                db.on_rebooted,
                db.in_incident,
                iam_worker_keys=worker_keys,
            )
            aws.start()
        sim.start(aws)
        server = make_server(args.host, args.http_port, sim)
    except OSError as exc:  # typically a port already in use
        print(f"sandbox: cannot start: {exc}", file=sys.stderr)
        sim.shutdown()
        return 1
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    moto = f" aws={sim.aws.endpoint}" if sim.aws else ""
    print(
        f"sandbox ready http=http://{args.host}:{args.http_port}{moto} "
        f"heal_delay={args.heal_delay:g}s",
        flush=True,
    )
    wait_for_signal()
    server.shutdown()
    server.server_close()
    sim.shutdown()
    print("sandbox stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
