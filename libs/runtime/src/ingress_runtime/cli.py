"""One command-line entry point per service, the same for all: ``<service> run | config``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TypeVar

from pydantic import ValidationError

from .service import App, ServiceContext, run_service
from .settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)


def service_main(
    name: str,
    settings_cls: type[S],
    factory: Callable[[ServiceContext[S]], App],
    description: str,
    argv: list[str] | None = None,
) -> int:
    prefix = settings_cls.model_config.get("env_prefix", "")
    parser = argparse.ArgumentParser(
        prog=name,
        description=description,
        epilog=f"Configuration comes from environment variables prefixed {prefix}; "
        f"`{name} config` prints the effective values and their variable names.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the service (the default)")
    sub.add_parser("config", help="validate the configuration and print it as JSON")
    args = parser.parse_args(argv)
    try:
        settings = settings_cls()
    except ValidationError as exc:
        for error in exc.errors():
            variable = prefix + "_".join(str(p) for p in error["loc"]).upper()
            print(f"{name}: invalid configuration: {variable}: {error['msg']}")
        return 2
    if args.command == "config":
        values = settings.model_dump(mode="json")
        print(json.dumps({f"{prefix}{k.upper()}": v for k, v in values.items()}, indent=2))
        return 0
    return run_service(name, settings, factory)
