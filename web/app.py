"""The ASGI application: state shared by the routes, startup and shutdown, and ways to run it."""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import sqlite3
import threading
import warnings
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import JSONResponse

from graph_runtime import Executor, NodeRegistry, default_registry

from . import frontend, logs, model_library, routes, templates
from .config import ServerConfig
from .files import remove_stale_temp_files
from .hub import Hub
from .queue import PromptQueue
from .security import SecurityMiddleware
from .store import Store
from .userdata import Settings, touch_dirs

log = logging.getLogger(__name__)
DEFAULT_WORKFLOW = Path(__file__).with_name("default_graph.json")


class ServerState:
    """Everything the routes share: one registry, one Executor (its cache lives as long as the server)."""

    def __init__(self, config: ServerConfig, registry: NodeRegistry | None = None):
        self.config = config
        self.paths = config.paths
        for folder in (self.paths.output, self.paths.input, self.paths.temp, config.user_dir):
            folder.mkdir(parents=True, exist_ok=True)
        touch_dirs(config.user_dir)
        stale = remove_stale_temp_files(self.paths.input, self.paths.output, self.paths.temp, config.user_dir)
        if stale:
            log.info("removed %d half-written upload or settings files", stale)
        self.user_dir = config.user_dir.resolve()
        self.registry = registry or default_registry()
        for module in config.node_modules:
            importlib.import_module(module).register(self.registry)
        self.executor = Executor(self.registry, cache=config.cache, paths=self.paths)
        self.hub = Hub(max_clients=config.max_ws_clients, max_queue=config.max_ws_queue)
        self.hub.feature_flags = self.feature_flags()
        self.store = Store(config.db_path, max_history=config.max_history, busy_timeout=config.db_busy_timeout,
                           finish_retry_s=config.db_finish_retry)
        self.queue = PromptQueue(self.executor, self.store, self.hub, max_pending=config.max_pending)
        self.settings = Settings(config.user_dir / "comfy.settings.json")
        self.extensions = [frontend.EXTENSION_URL]
        self.default_workflow: Path | None = DEFAULT_WORKFLOW
        self.logs = logs.LogBuffer()
        self.logs.hub = self.hub

    def feature_flags(self) -> dict:
        return {"supports_preview_metadata": True, "max_upload_size": self.config.max_upload_bytes}


def create_app(config: ServerConfig, registry: NodeRegistry | None = None) -> Starlette:
    state = ServerState(config, registry)

    @asynccontextmanager
    async def lifespan(app):
        state.hub.attach(asyncio.get_running_loop())
        state.logs.attach()
        from .system import _version

        state.logs.write(f"graph-runtime {_version('graph-runtime')} serving on http://{config.host}:{config.port}")
        state.queue.start()
        try:
            yield
        finally:
            state.logs.detach()
            await state.hub.close_all()
            await asyncio.get_running_loop().run_in_executor(None, state.queue.stop)
            state.store.close()

    async def database_busy(request, exc: sqlite3.Error):
        log.warning("%s %s: the database answered %s", request.method, request.url.path, exc)
        return JSONResponse({"error": {"type": "database_unavailable", "message": f"the queue database is not "
                                       f"available right now ({exc}); try again", "details": "", "extra_info": {}},
                             "node_errors": {}}, status_code=503, headers={"Retry-After": "1"})

    table = templates.routes() + routes.routes() + logs.routes() + model_library.routes()
    app = Starlette(routes=table + frontend.routes(config.frontend), lifespan=lifespan,
                    exception_handlers={sqlite3.Error: database_busy})
    app.state.server = state
    app.add_middleware(SecurityMiddleware, config=config)
    return app


def uvicorn_config(app, config: ServerConfig, **kw):
    import uvicorn

    # uvicorn calls its implementation on the websockets library legacy; it is the one this server runs on.
    warnings.filterwarnings("ignore", message=".*websockets.*implementation is deprecated", category=DeprecationWarning)

    from .connections import connection_cap, guarded_protocol, raise_fd_limit

    raise_fd_limit()
    http = guarded_protocol(config.header_timeout, connection_cap(config.max_connections))
    return uvicorn.Config(app, host=config.host, port=config.port, ws="websockets", http=http,
                          log_level=kw.pop("log_level", "warning"),
                          ws_max_size=1024 * 1024, ws_ping_interval=20, ws_ping_timeout=20, lifespan="on",
                          timeout_graceful_shutdown=5, **kw)


class BackgroundServer:
    """A server on a loopback port in a thread of this process (tests, embedding)."""

    def __init__(self, config: ServerConfig, registry: NodeRegistry | None = None):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((config.host, config.port))
        config.port = self.sock.getsockname()[1]
        self.config = config
        self.app = create_app(config, registry)
        self.server = uvicorn.Server(uvicorn_config(self.app, config))
        self.thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)

    @property
    def state(self) -> ServerState:
        return self.app.state.server

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def start(self, timeout: float = 20.0) -> BackgroundServer:
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout * 20)):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                break
            deadline.wait(0.05)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
