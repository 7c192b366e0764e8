"""``ingress-events``: keep the committed schemas and docs in step with the models; watch the bus.

ingress-events check            fail on drift or on a breaking schema change (CI runs this)
ingress-events write            regenerate schemas and docs (refuses breaking changes)
ingress-events tail [FAMILY]    print the current state, then live events (needs NATS)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from . import asyncapi, schemas
from .catalogue import Family


def _check() -> int:
    status = 0
    for name, problems in schemas.compatibility_report().items():
        status = 1
        for problem in problems:
            print(f"BREAKING {name}: {problem}", file=sys.stderr)
    for name in schemas.drift():
        status = 1
        print(f"DRIFT schemas/{name}: run `ingress-events write`", file=sys.stderr)
    for path, text in asyncapi.outputs().items():
        if not path.exists() or path.read_text() != text:
            status = 1
            print(f"DRIFT {path}: run `ingress-events write`", file=sys.stderr)
    if status == 0:
        print("event catalogue: schemas compatible, schemas and docs up to date")
    return status


def _write() -> int:
    report = schemas.compatibility_report()
    if report:
        for name, problems in report.items():
            for problem in problems:
                print(f"BREAKING {name}: {problem}", file=sys.stderr)
        print("refusing to write breaking changes: they need a new major version", file=sys.stderr)
        return 1
    for name in schemas.write():
        print(f"wrote schemas/{name}")
    for path, text in asyncapi.outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


async def _tail(server: str, families: list[Family], root: str) -> None:
    from nats.aio.msg import Msg

    from .bus import Bus, BusSettings
    from .subjects import Subjects

    bus = await Bus.connect(BusSettings(servers=[server], subjects=Subjects(root)))
    subjects = Subjects(root)

    def show(subject: str, headers: dict[str, str] | None, data: bytes) -> None:
        ce_type = (headers or {}).get("ce-type", "?")
        body = json.loads(data) if data else {}
        print(f"{subject}  {ce_type}  gen={body.get('generation')}  {json.dumps(body)[:200]}")

    for family in families:
        for subject, env in (await bus.replay(family)).items():
            show(subject, {"ce-type": env.type}, env.event.model_dump_json().encode())

    async def on_msg(msg: Msg) -> None:
        show(msg.subject, msg.headers, msg.data)

    for family in families:
        await bus.nats.subscribe(subjects.family_wildcard(family), cb=on_msg)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ingress-events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="fail on schema drift or breaking changes")
    sub.add_parser("write", help="regenerate schemas and docs")
    tail = sub.add_parser("tail", help="print current state then live events")
    tail.add_argument("families", nargs="*", choices=[f.value for f in Family])
    tail.add_argument("--server", default="nats://127.0.0.1:4222")
    tail.add_argument("--root", default="ingress")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check()
    if args.command == "write":
        return _write()
    families = [Family(f) for f in args.families] or list(Family)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail(args.server, families, args.root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
