"""ingress_runtime.kubeclient: the client without its models, and everything still reachable.
Each case runs in a fresh interpreter (the point is what a process imports)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_client_comes_without_its_models() -> None:
    out = run(
        """
        import asyncio, sys
        from ingress_runtime.kubeclient import ApiClient, ApiException, Configuration
        from kubernetes_asyncio import config  # its kube_config asks the client for names

        async def main():
            async with ApiClient(Configuration(host="http://127.0.0.1:1")) as api:
                assert api.configuration.host == "http://127.0.0.1:1"

        asyncio.run(main())
        assert issubclass(ApiException, Exception) and config.load_kube_config
        print(sum(m.startswith("kubernetes_asyncio.client.models.") for m in sys.modules))
        """
    )
    assert out == "0"


def test_the_typed_api_and_models_still_load_when_asked_for() -> None:
    out = run(
        """
        import sys
        import ingress_runtime.kubeclient
        import kubernetes_asyncio.client as client
        from kubernetes_asyncio.client import CoreV1Api, V1Pod
        pod = client.models.V1ObjectMeta(name="web-1")
        loaded = sum(m.startswith("kubernetes_asyncio.client.models.") for m in sys.modules)
        print(CoreV1Api.__name__, V1Pod.__name__, pod.name, loaded > 500)  # 767 in v36
        """
    )
    assert out == "CoreV1Api V1Pod web-1 True"


def test_an_earlier_import_of_the_client_is_left_alone() -> None:
    out = run(
        """
        import kubernetes_asyncio.client as real
        import ingress_runtime.kubeclient as light
        print(light.ApiClient is real.ApiClient, hasattr(real, "CoreV1Api"))
        """
    )
    assert out == "True True"
