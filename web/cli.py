"""``graph-runtime serve``: the ComfyUI-compatible server with the graph editor."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from graph_runtime import RuntimePaths

from .config import ServerConfig, is_loopback

TOKEN_ENV = "GRAPH_RUNTIME_TOKEN"


def add_command(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve the graph editor and ComfyUI's HTTP/websocket API")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--output-dir", help="where output nodes write (default ./output)")
    p.add_argument("--input-dir", help="uploads and LoadImage files (default ./input)")
    p.add_argument("--temp-dir", help="previews and temporary outputs (default ./temp)")
    p.add_argument("--user-dir", help="settings, saved workflows, queue database (default ./user)")
    p.add_argument("--cache", default="last", help="cache policy: last, none, lru or lru:N")
    p.add_argument("--listen-anywhere", action="store_true",
                   help="allow binding to a non-loopback address (requires a token)")
    p.add_argument("--token", help=f"access token required on every request (default: ${TOKEN_ENV})")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also accept this Host header name (e.g. a reverse proxy's)")
    p.add_argument("--no-frontend", action="store_true", help="serve only the API")
    p.add_argument("--node-module", action="append", default=[], metavar="MODULE",
                   help="import MODULE and call its register(registry) to add nodes (repeatable)")
    p.set_defaults(func=serve)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host):
        if not args.listen_anywhere:
            raise SystemExit(f"error: {args.host} is not a loopback address; binding to it exposes the server to "
                             "the network. Pass --listen-anywhere and a token (--token or $" + TOKEN_ENV + ").")
        if not token:
            raise SystemExit(f"error: --listen-anywhere requires a token (--token or ${TOKEN_ENV})")
    paths = RuntimePaths(output=args.output_dir, input=args.input_dir, temp=args.temp_dir, user=args.user_dir)
    return ServerConfig(host=args.host, port=args.port, paths=paths, token=token,
                        listen_anywhere=args.listen_anywhere, allowed_hosts=tuple(args.allow_host),
                        cache=args.cache, frontend=not args.no_frontend, node_modules=tuple(args.node_module))


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app, uvicorn_config

    try:
        config = config_from_args(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    from .store import StoreError

    try:
        app = create_app(config)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = app.state.server
    for pack, err in state.registry.load_errors.items():
        print(f"warning: node pack {pack!r} failed to load: {err}", file=sys.stderr)
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"graph-runtime server on http://{host}:{config.port}  ({len(state.registry)} nodes, "
          f"{len(state.queue.pending())} prompts waiting)", flush=True)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    server = uvicorn.Server(uvicorn_config(app, config))
    server.run()
    return 0
