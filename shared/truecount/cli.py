"""The ``truecount`` command line.

Each command imports what it needs when it runs, so ``truecount --help`` stays fast
and no command pays for another's SDKs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from truecount.ops.cli import (
    reconcile_cmd,
    replay_cmd,
    retry_failed_cmd,
    status_cmd,
    trace_cmd,
)

app = typer.Typer(
    help="Truecount: server-side measurement, every conversion counted once.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(
    help="Inspect and validate the TOML config.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.command("status")(status_cmd)
app.command("trace")(trace_cmd)
app.command("replay")(replay_cmd)
app.command("reconcile")(reconcile_cmd)
app.command("retry-failed")(retry_failed_cmd)


@app.command()
def dev(
    config: Annotated[
        Path | None, typer.Option(help="config TOML (default: generated dev config)")
    ] = None,
    project: Annotated[str, typer.Option(help="project id on the emulators")] = (
        "truecount-local"
    ),
    port_offset: Annotated[
        int, typer.Option(help="added to every port (8081-8083, 8090)")
    ] = 0,
    workdir: Annotated[Path, typer.Option(help="logs and generated config")] = Path(
        ".truecount"
    ),
) -> None:
    """Run the whole system locally: emulators, functions, push wiring, capture sink."""
    from truecount.devstack import DevStack, StackPorts

    ports = StackPorts().shifted(port_offset)
    stack = DevStack(ports=ports, project=project, config_path=config, workdir=workdir)
    stack.run_forever()


@app.command()
def send(
    ingest: Annotated[str, typer.Option(help="ingest base URL")] = "",
    webhook: Annotated[str, typer.Option(help="webhook base URL")] = "",
    capture: Annotated[str, typer.Option(help="capture sink base URL")] = "",
    wait: Annotated[float, typer.Option(help="seconds to wait for deliveries")] = 20.0,
    port_offset: Annotated[int, typer.Option(help="as given to truecount dev")] = 0,
) -> None:
    """Send demo traffic for the three architectures and show what each platform got."""
    from truecount.demo import run_demo
    from truecount.devstack import StackPorts

    ports = StackPorts().shifted(port_offset)
    code = run_demo(
        ingest or ports.url("ingest"),
        webhook or ports.url("webhook"),
        capture or ports.url("capture"),
        wait,
    )
    raise typer.Exit(code)


@app.command()
def redrive(
    project: Annotated[
        str,
        typer.Option(
            envvar="GOOGLE_CLOUD_PROJECT",
            help="Google Cloud project; *_EMULATOR_HOST points at the emulators",
        ),
    ] = "truecount-local",
    topic: Annotated[
        str, typer.Option(envvar="TRUECOUNT_EVENTS_TOPIC", help="events topic")
    ] = "truecount-events",
) -> None:
    """Ask fanout to republish the deferred events now due (Cloud Scheduler's job)."""
    from truecount.errors import PublishError
    from truecount.ops.retry import publish_redrive

    try:
        message_id = publish_redrive(project, topic)
    except PublishError as exc:
        typer.echo(f"redrive not published: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"redrive requested on {topic} (message {message_id})")


@app.command()
def contract() -> None:
    """Print the canonical event JSON Schema and the config reference."""
    from truecount.contract import render_config_reference, render_schema

    typer.echo(render_schema())
    typer.echo(render_config_reference())


@config_app.command("check")
def config_check(
    path: Annotated[Path, typer.Argument(help="config TOML to validate")],
) -> None:
    """Validate a config file, destinations included; name every bad key."""
    import os

    from truecount.config import load_config
    from truecount.destinations.registry import validate_config
    from truecount.errors import ConfigError

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        typer.echo(f"invalid: {exc}", err=True)
        raise typer.Exit(1) from None
    problems = validate_config(cfg, dict(os.environ))
    for problem in problems:
        typer.echo(f"invalid: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {len(cfg.destinations)} destinations, {len(cfg.rules)} rules")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="truecount")


if __name__ == "__main__":  # pragma: no cover
    main()
