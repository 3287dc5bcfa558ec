"""`runbook webhook`: serve the alarm webhook (what `runbook stack up` starts as `webhook`)."""

import argparse
import logging
import os

DEFAULT_PORT = 8790


def serve(host: str, port: int) -> None:
    import uvicorn

    from starter.webhook.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = uvicorn.Config(
        create_app(),
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        lifespan="on",
        # Longer than a load balancer's idle timeout (ALB: 60 s), so the server is never the
        # side that closes a kept-alive connection under a request.
        timeout_keep_alive=75,
    )
    uvicorn.Server(config).run()


def cmd_webhook(args: argparse.Namespace) -> int:
    serve(args.host, args.port)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    webhook = sub.add_parser("webhook", help="serve the alarm webhook (SNS, Alertmanager)")
    webhook.add_argument("--host", default="127.0.0.1")
    webhook.add_argument(
        "--port", type=int, default=int(os.environ.get("RUNBOOK_PORT_WEBHOOK") or DEFAULT_PORT)
    )
    webhook.set_defaults(func=cmd_webhook)
