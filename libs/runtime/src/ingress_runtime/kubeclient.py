"""kubernetes-asyncio's API client, without loading its ~1,500 generated model modules.

``import kubernetes_asyncio.client`` runs a package ``__init__`` that imports every API class
and every model: ~37 MB in each process that imports it (measured in a fresh interpreter: the
client's dependencies alone 43 MB, with the package 75 MB). The services call the API raw
(``call_api(..., _preload_content=False)``, JSON parsed by themselves) and never build a model.

Importing this module first makes ``kubernetes_asyncio.client`` and its ``models`` package
lazy: a submodule (``api_client``, ``configuration``, ``exceptions``, ``rest``, ...) is
imported on its own; a name one of the light modules defines (``ApiClient``,
``Configuration``, ``ApiException``) comes from it; any other name (``CoreV1Api``,
``V1Pod``, ...) runs the real package ``__init__`` at that moment, so code that wants the
typed API still gets it. When the client was imported before this module, nothing changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

_LIGHT = ("api_client", "configuration", "exceptions")
"""The client's modules that hold what the services use, and import no models."""


def _lazy_package(name: str, light: tuple[str, ...]) -> None:
    if name in sys.modules:
        return
    top = importlib.util.find_spec(name.split(".")[0])
    if top is None or not top.submodule_search_locations:
        return
    # Found by path, not by find_spec(name): that would import the parent package, whose
    # __init__ imports this one.
    where = Path(next(iter(top.submodule_search_locations))).joinpath(*name.split(".")[1:])
    spec = importlib.util.spec_from_file_location(
        name, where / "__init__.py", submodule_search_locations=[str(where)]
    )
    if spec is None or spec.loader is None:
        return
    loader = spec.loader
    module = importlib.util.module_from_spec(spec)
    whole = False

    def __getattr__(attr: str) -> Any:
        nonlocal whole
        if attr.startswith("__"):
            raise AttributeError(attr)
        if (where / f"{attr}.py").exists() or (where / attr / "__init__.py").exists():
            return importlib.import_module(f"{name}.{attr}")
        for sub in light:
            found = vars(importlib.import_module(f"{name}.{sub}"))
            if attr in found:
                return found[attr]
        if not whole:
            whole = True
            loader.exec_module(module)  # the real __init__: everything, as without this module
            if attr in vars(module):
                return vars(module)[attr]
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module


def _install() -> None:
    _lazy_package("kubernetes_asyncio.client", _LIGHT)
    _lazy_package("kubernetes_asyncio.client.models", ())
    # The top package next: its __init__ imports config, whose kube_config asks the client for
    # ApiClient. Asked while api_client is itself still importing, the name would not be
    # there yet and the whole package would load.
    importlib.import_module("kubernetes_asyncio")


_install()

from kubernetes_asyncio.client.api_client import ApiClient  # noqa: E402
from kubernetes_asyncio.client.configuration import Configuration  # noqa: E402
from kubernetes_asyncio.client.exceptions import ApiException  # noqa: E402

__all__ = ["ApiClient", "ApiException", "Configuration"]
