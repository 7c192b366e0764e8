"""What every Ingress Domain service shares: settings, logs, metrics, health, tracing, lifecycle."""

from .admin import AdminServer, Readiness
from .cli import service_main
from .logging import setup_logging
from .service import App, ServiceContext, run_service, serve
from .settings import ServiceSettings
from .tasks import cancel_and_wait
from .tracing import setup_tracing

__all__ = [
    "AdminServer",
    "App",
    "Readiness",
    "ServiceContext",
    "ServiceSettings",
    "cancel_and_wait",
    "run_service",
    "serve",
    "service_main",
    "setup_logging",
    "setup_tracing",
]
