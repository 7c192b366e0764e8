"""A local API server speaking the Kubernetes list/watch wire protocol for the watched kinds.

What it implements, as kube-apiserver does:
* ``GET <prefix>/<plural>?limit=N&continue=T``: a paginated list whose metadata carries the
  list's ``resourceVersion`` and a ``continue`` token; a token from before a compaction gets an
  HTTP ``410`` Status (``reason: Expired``).
* ``GET ...?watch=true&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=S``: HTTP 200
  with chunked transfer encoding, one JSON ``{"type", "object"}`` per line: every change after RV,
  then live changes, ``BOOKMARK`` events carrying only a newer resourceVersion, and the stream
  closed by the server after ``timeoutSeconds``. A RV older than the last compaction gets an
  ``ERROR`` event with a ``410`` Status inside the 200 stream, as the real server does.
* ``PATCH .../namespaces/NS/ingresses/NAME/status`` and ``.../services/NAME/status`` with
  ``Content-Type: application/merge-patch+json`` (RFC 7386, others get 415): only ``.status``
  changes; a patch that changes nothing does not bump the resourceVersion, as on the real server.
* coordination.k8s.io/v1 Leases: ``POST`` (409 AlreadyExists), ``GET`` (404 NotFound), ``PUT``
  with ``metadata.resourceVersion`` as a precondition (409 Conflict when stale).
* ``POST /api/v1/namespaces/NS/events``: core/v1 Events (``generateName`` honoured); ``GET``
  lists them.
* Objects of the watched kinds by name: ``POST`` to the (namespaced) collection (409
  AlreadyExists), ``GET``, ``PUT`` (409 Conflict when ``metadata.resourceVersion`` is stale) and
  ``DELETE`` (404 NotFound), so that tests can drive it through the API as they drive k3s.
* Test controls: ``compact()``, ``drop_watches()`` (connections cut mid-stream) and ``stall``
  (streams stay open and silent, to exercise client-side read timeouts).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from typing import Any

from aiohttp import web

PATHS: dict[str, str] = {
    "/apis/networking.k8s.io/v1/ingresses": "Ingress",
    "/apis/networking.k8s.io/v1/ingressclasses": "IngressClass",
    "/api/v1/services": "Service",
    "/apis/discovery.k8s.io/v1/endpointslices": "EndpointSlice",
    "/api/v1/secrets": "Secret",
    "/apis/ingress-domain.io/v1alpha1/zones": "Zone",
    "/apis/ingress-domain.io/v1alpha1/domains": "Domain",
    "/apis/ingress-domain.io/v1alpha1/pathclaims": "PathClaim",
    "/apis/ingress-domain.io/v1alpha1/vippools": "VipPool",
    "/apis/ingress-domain.io/v1alpha1/bgppeers": "BgpPeer",
}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


CLUSTER_SCOPED = {"IngressClass", "Zone", "VipPool", "BgpPeer"}
STATUS_PATHS = {
    "/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{name}/status": "Ingress",
    "/api/v1/namespaces/{namespace}/services/{name}/status": "Service",
}
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


class LocalApiServer:
    def __init__(self, bookmark_interval: float = 0.2) -> None:
        self.rv = 100
        self.compacted = 0
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            k: {} for k in PATHS.values()
        }
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []
        self.bookmark_interval = bookmark_interval
        self.stall = False
        self.requests: list[str] = []
        self._changed = asyncio.Condition()
        self._streams: set[web.StreamResponse] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.status_patches: list[tuple[str, str, str, dict[str, Any]]] = []

    # ------------------------------------------------------------------ state

    def _record(self, kind: str, kind_of_event: str, obj: dict[str, Any]) -> None:
        self.history.append((self.rv, kind, kind_of_event, copy.deepcopy(obj)))

    async def put(self, obj: dict[str, Any]) -> None:
        kind = obj["kind"]
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", ""), meta["name"])
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", f"uid-{kind.lower()}-{key[0]}-{key[1]}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        existed = key in self.objects[kind]
        self.objects[kind][key] = copy.deepcopy(obj)
        self._record(kind, "MODIFIED" if existed else "ADDED", obj)
        async with self._changed:
            self._changed.notify_all()

    async def delete(self, kind: str, namespace: str, name: str, *, quietly: bool = False) -> None:
        """``quietly``: the object vanishes while no watch can see it (history compacted)."""
        obj = self.objects[kind].pop((namespace, name))
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if not quietly:
            self._record(kind, "DELETED", obj)
        async with self._changed:
            self._changed.notify_all()

    def compact(self) -> None:
        self.compacted = self.rv
        self.history = [h for h in self.history if h[0] > self.compacted]

    async def drop_watches(self) -> None:
        for stream in list(self._streams):
            transport = stream._req.transport if stream._req is not None else None
            if transport is not None:
                transport.abort()
        self._streams.clear()

    # ------------------------------------------------------------------ HTTP

    async def start(self) -> LocalApiServer:
        app = web.Application()
        for path in PATHS:
            app.router.add_get(path, self._handle)
        for path, kind in PATHS.items():
            prefix, _, plural = path.rpartition("/")
            collection = (
                path if kind in CLUSTER_SCOPED else f"{prefix}/namespaces/{{namespace}}/{plural}"
            )
            app.router.add_post(collection, self._create)
            for method in ("GET", "PUT", "DELETE"):
                app.router.add_route(method, collection + "/{name}", self._by_name)
        for path in STATUS_PATHS:
            app.router.add_patch(path, self._patch_status)
        app.router.add_post(LEASES, self._create_lease)
        app.router.add_get(LEASES + "/{name}", self._get_lease)
        app.router.add_put(LEASES + "/{name}", self._put_lease)
        app.router.add_post("/api/v1/namespaces/{namespace}/events", self._create_event)
        app.router.add_get("/api/v1/namespaces/{namespace}/events", self._list_events)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        await self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _patch_status(self, request: web.Request) -> web.Response:
        kind = "Ingress" if "/ingresses/" in request.path else "Service"
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if request.content_type != "application/merge-patch+json":
            return web.json_response(
                _status(415, "UnsupportedMediaType", f"{request.content_type} not supported"),
                status=415,
            )
        obj = self.objects[kind].get((namespace, name))
        if obj is None:
            return web.json_response(
                _status(404, "NotFound", f"{kind} {namespace}/{name} not found"), status=404
            )
        body = await request.json()
        self.status_patches.append((kind, namespace, name, body))
        # The status subresource changes .status only; everything else in the patch is ignored.
        status = merge_patch(obj.get("status") or {}, (body or {}).get("status") or {})
        if status != (obj.get("status") or {}):
            updated = copy.deepcopy(obj)
            updated["status"] = status
            await self.put(updated)
            obj = self.objects[kind][(namespace, name)]
        return web.json_response(obj)

    def _stamp_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        lease.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return lease

    async def _create_lease(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        body = await request.json()
        name = body["metadata"]["name"]
        if (namespace, name) in self.leases:
            return web.json_response(
                _status(409, "AlreadyExists", f'leases "{name}" already exists'), status=409
            )
        body["metadata"]["namespace"] = namespace
        self.leases[(namespace, name)] = self._stamp_lease(body)
        return web.json_response(body, status=201)

    async def _get_lease(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        lease = self.leases.get(key)
        if lease is None:
            return web.json_response(
                _status(404, "NotFound", f'leases "{key[1]}" not found'), status=404
            )
        return web.json_response(lease)

    async def _put_lease(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        lease = self.leases.get(key)
        if lease is None:
            return web.json_response(
                _status(404, "NotFound", f'leases "{key[1]}" not found'), status=404
            )
        body = await request.json()
        if body.get("metadata", {}).get("resourceVersion") != lease["metadata"]["resourceVersion"]:
            return web.json_response(
                _status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on leases.coordination.k8s.io "{key[1]}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                ),
                status=409,
            )
        self.leases[key] = self._stamp_lease(body)
        return web.json_response(body)

    async def _create_event(self, request: web.Request) -> web.Response:
        body = await request.json()
        meta = body.setdefault("metadata", {})
        meta["namespace"] = request.match_info["namespace"]
        if "name" not in meta:
            meta["name"] = f"{meta.get('generateName', 'event.')}{len(self.events):08x}"
        self.events.append(self._stamp_lease(body))
        return web.json_response(body, status=201)

    async def _list_events(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        items = [e for e in self.events if e["metadata"]["namespace"] == namespace]
        return web.json_response({"kind": "EventList", "apiVersion": "v1", "items": items})

    def _kind_of(self, request: web.Request) -> tuple[str, str]:
        """The kind a by-name or collection path names, and its namespace ("" if cluster-wide)."""
        namespace = request.match_info.get("namespace", "")
        path = request.path
        if "name" in request.match_info:
            path = path.rpartition("/")[0]
        if namespace:
            prefix, _, plural = path.rpartition("/")
            path = f"{prefix.rpartition('/namespaces/')[0]}/{plural}"
        return PATHS[path], namespace

    async def _create(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind_of(request)
        body = await request.json()
        meta = body.setdefault("metadata", {})
        if namespace:
            meta["namespace"] = namespace
        if (namespace, meta["name"]) in self.objects[kind]:
            return web.json_response(
                _status(409, "AlreadyExists", f'{kind} "{meta["name"]}" already exists'),
                status=409,
            )
        meta.pop("resourceVersion", None)
        await self.put({**body, "kind": kind})
        return web.json_response(self.objects[kind][(namespace, meta["name"])], status=201)

    async def _by_name(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind_of(request)
        key = (namespace, request.match_info["name"])
        current = self.objects[kind].get(key)
        if current is None:
            return web.json_response(
                _status(404, "NotFound", f'{kind} "{key[1]}" not found'), status=404
            )
        if request.method == "GET":
            return web.json_response(current)
        if request.method == "DELETE":
            await self.delete(kind, *key)
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        body = await request.json()
        if (
            body.get("metadata", {}).get("resourceVersion")
            != current["metadata"]["resourceVersion"]
        ):
            return web.json_response(
                _status(409, "Conflict", f'{kind} "{key[1]}": the object has been modified'),
                status=409,
            )
        # A replace keeps what the server owns: uid, creation time, and status (a subresource).
        meta = {**body["metadata"], "uid": current["metadata"]["uid"]}
        meta["creationTimestamp"] = current["metadata"]["creationTimestamp"]
        replaced = {**body, "kind": kind, "metadata": meta}
        if "status" in current:
            replaced["status"] = current["status"]
        await self.put(replaced)
        return web.json_response(self.objects[kind][key])

    def status_of(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.objects[kind][(namespace, name)].get("status") or {})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = PATHS[request.path]
        self.requests.append(f"{kind} {request.query_string}")
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, kind)
        return self._list(request, kind)

    def _list(self, request: web.Request, kind: str) -> web.Response:
        limit = int(request.query.get("limit", "0") or 0)
        offset, list_rv = 0, self.rv
        token = request.query.get("continue")
        if token:
            offset, list_rv = json.loads(base64.b64decode(token))
            if list_rv < self.compacted:
                return web.json_response(
                    _status(410, "Expired", "The provided continue parameter is too old"),
                    status=410,
                )
        items = [self.objects[kind][k] for k in sorted(self.objects[kind])]
        page = items[offset : offset + limit] if limit else items[offset:]
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if limit and offset + limit < len(items):
            meta["continue"] = base64.b64encode(
                json.dumps([offset + limit, list_rv]).encode()
            ).decode()
        body = {"kind": f"{kind}List", "apiVersion": "v1", "metadata": meta, "items": page}
        return web.json_response(body)

    async def _watch(self, request: web.Request, kind: str) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        bookmarks = request.query.get("allowWatchBookmarks") == "true"
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self._streams.add(response)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        async def send(event: dict[str, Any]) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        try:
            if since < self.compacted:
                await send(
                    {
                        "type": "ERROR",
                        "object": _status(
                            410, "Expired", f"too old resource version: {since} ({self.compacted})"
                        ),
                    }
                )
                return response
            sent = since
            bookmark_due = False
            while loop.time() < deadline:
                if not self.stall:
                    # Everything up to ``current`` is sent before a bookmark may name it.
                    current = self.rv
                    for rv, k, kind_of_event, obj in list(self.history):
                        if k == kind and rv > sent:
                            await send({"type": kind_of_event, "object": obj})
                            sent = rv
                    if bookmark_due and bookmarks:
                        sent = max(sent, current)
                        await send(
                            {
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": kind,
                                    "metadata": {"resourceVersion": str(sent)},
                                },
                            }
                        )
                bookmark_due = False
                wait = min(self.bookmark_interval, max(deadline - loop.time(), 0))
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait(), wait)
                    except TimeoutError:
                        bookmark_due = True
            return response
        except (ConnectionResetError, RuntimeError):
            return response
        finally:
            self._streams.discard(response)
            if request.transport is not None and not request.transport.is_closing():
                await response.write_eof()
