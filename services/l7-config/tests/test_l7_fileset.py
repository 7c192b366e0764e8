"""File mode without Envoy: the golden file set and its Kubernetes objects, and the writer's
atomic, make-before-break, rewrite-only-what-changed behaviour on a real directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from ingress_l7_config.adapters.files import FileSetWriter
from ingress_l7_config.domain.files import kubernetes_objects, render_files, write_rank
from ingress_l7_config.domain.layout import FileLayout, cluster_file
from ingress_l7_config.domain.model import SecretMaterial
from ingress_l7_config.domain.resources import BuildOptions, build_snapshot
from l7_fixtures import domain, endpoints, route, tls, wb

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"
LAYOUT = FileLayout("/etc/envoy/xds")


def _files(web_port: int = 8080, with_tls: bool = True) -> dict[str, bytes]:
    domains = [
        domain("*.apps.example.com", [route("/", "Prefix", "web")]),
        domain(
            "fed.example.com",
            [route("/", "Prefix", "web")],
            remote_backends=[{"cluster": "cluster-b", "address": "192.0.2.20", "port": 80}],
        ),
    ]
    if with_tls:
        domains.append(
            domain(
                "shop.example.com",
                [route("/", "Prefix", "web")],
                default_backend=wb("web"),
                tls=tls("shop-tls", "0" * 64),
                http_redirect_to_https=True,
            )
        )
    snap = build_snapshot(
        {d.host: d for d in domains},
        {("shop", "web", 80): endpoints("web", web_port)},
        {"shop/shop-tls": SecretMaterial(b"-----CERT-----\n", b"-----KEY-----\n")}
        if with_tls
        else {},
        BuildOptions(access_log=False, files=LAYOUT),
    )
    return render_files(snap, LAYOUT)


def test_golden_file_set_and_kubernetes_objects() -> None:
    files = _files()
    objects = kubernetes_objects(files, "ingress-domain")
    text = (
        json.dumps(
            {
                "files": {p: json.loads(b) for p, b in files.items()},
                "objects": [
                    {
                        "kind": o["kind"],
                        "metadata": o["metadata"],
                        "keys": sorted(o.get("data") or o.get("stringData") or {}),
                    }
                    for o in objects
                ],
            },
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )
    path = GOLDEN / "files.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), "regenerate with UPDATE_GOLDEN=1 and review the diff"
    assert sorted(files) == [
        "core/cds.json",
        "core/lds.json",
        "core/rds-http.json",
        "domains/shop.example.com/rds-https.json",
        "endpoints/shop_web_80.json",
        "endpoints/shop_web_80_at_fed.example.com.json",
        "secrets/shop_shop-tls.json",
    ]
    # Listeners and clusters read routes, endpoints and secrets from the files, never ADS.
    assert "ads" not in files["core/lds.json"].decode() + files["core/cds.json"].decode()
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds[0] == ("ConfigMap", "l7-endpoints")  # written first
    assert ("Secret", "l7-secrets") in kinds  # key material never in a ConfigMap
    assert kinds[-1] == ("ConfigMap", "l7-core")
    assert [o["metadata"]["annotations"].get("ingress-domain.io/host") for o in objects].count(
        "shop.example.com"
    ) == 1


def test_file_names_are_configmap_keys_and_distinct() -> None:
    names = ["shop/web/80", "shop/web/80@a.example.com", "shop/web/80@*.a.example.com"]
    files = [cluster_file(n) for n in names]
    assert len(set(files)) == 3
    assert all(all(ch.isalnum() or ch in "-._" for ch in f) for f in files)


def test_writer_replaces_only_changed_files_in_order(tmp_path: Path) -> None:
    writer = FileSetWriter(tmp_path)
    first = _files()
    assert writer.write(first) == sorted(first, key=lambda p: (write_rank(p), p))
    assert stat.S_IMODE((tmp_path / "secrets/shop_shop-tls.json").stat().st_mode) == 0o600
    inode = (tmp_path / "core/lds.json").stat().st_ino
    assert writer.write(first) == []  # converged: zero writes
    # An endpoint change is one file, replaced by rename (a new inode).
    moved = _files(web_port=9090)
    ep_inode = (tmp_path / "endpoints/shop_web_80.json").stat().st_ino
    changed = writer.write(moved)
    assert set(changed) == {
        "endpoints/shop_web_80.json",
        "endpoints/shop_web_80_at_fed.example.com.json",
    }
    assert (tmp_path / "endpoints/shop_web_80.json").stat().st_ino != ep_inode
    assert (tmp_path / "core/lds.json").stat().st_ino == inode
    # The TLS domain goes: listeners rewritten first, its files removed last, its folder too.
    changes = writer.write(_files(web_port=9090, with_tls=False))
    assert changes.index("core/lds.json") < changes.index("domains/shop.example.com/rds-https.json")
    assert changes.index("core/lds.json") < changes.index("secrets/shop_shop-tls.json")
    assert not (tmp_path / "domains/shop.example.com").exists()
    assert not (tmp_path / "secrets/shop_shop-tls.json").exists()


def test_a_restarted_writer_rewrites_nothing_and_clears_partial_files(tmp_path: Path) -> None:
    files = _files()
    FileSetWriter(tmp_path).write(files)
    (tmp_path / "core" / ".tmp-crash.part").write_bytes(b"{half")
    again = FileSetWriter(tmp_path)
    assert again.write(files) == []
    assert not (tmp_path / "core" / ".tmp-crash.part").exists()


def test_remote_backends_render_in_file_mode() -> None:
    eds = json.loads(_files()["endpoints/shop_web_80_at_fed.example.com.json"])
    [assignment] = eds["resources"]
    priorities = [loc.get("priority", 0) for loc in assignment["endpoints"]]
    assert priorities == [0, 1]


def test_render_cache_gives_the_same_bytes_and_holds_only_current_resources() -> None:
    d = domain("cache.example.com", [route("/", "Prefix", "web")])
    options = BuildOptions(access_log=False, files=LAYOUT)
    first = build_snapshot({d.host: d}, {("shop", "web", 80): endpoints("web", 1)}, {}, options)
    second = build_snapshot({d.host: d}, {("shop", "web", 80): endpoints("web", 2)}, {}, options)
    cache: dict[tuple[str, str], dict[str, object]] = {}
    assert render_files(first, LAYOUT, cache) == render_files(first, LAYOUT)
    assert render_files(second, LAYOUT, cache) == render_files(second, LAYOUT)
    current = {(t, r.digest) for t, rs in second.resources.items() for r in rs.values()}
    assert set(cache) == current
