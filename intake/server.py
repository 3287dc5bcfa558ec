"""Serve the intake (alarms today) with uvicorn."""

DEFAULT_PORT = 8790


def serve(host: str, port: int) -> None:
    import uvicorn

    from intake.app import ConfigError, WebhookConfig, create_app
    from settings import UnknownEnvironment
    from telemetry import configure_logging, secret_values

    try:
        webhook = WebhookConfig()
        configure_logging(
            secret_values(
                webhook.token,
                webhook.intake_key,
                webhook.slack_signing_secret,
                webhook.slack_bot_token,
            )
        )
        app = create_app(webhook)
    except (ConfigError, UnknownEnvironment) as err:
        raise SystemExit(f"intake: {err}") from None
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        log_config=None,  # uvicorn's loggers go to the root's handler: JSON lines when asked
        lifespan="on",
        # Longer than a load balancer's idle timeout (ALB: 60 s), so the server is never the
        # side that closes a kept-alive connection under a request.
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:  # the app's start failed (the namespace, say) and said why
        raise SystemExit(1)
