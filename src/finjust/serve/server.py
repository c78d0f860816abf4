"""The app under uvicorn, with a Ctrl-C that does not wait for every queued generation."""

from __future__ import annotations

import threading
from typing import Any

import uvicorn
from fastapi import FastAPI

from finjust.serve.engine import Engine

#: seconds the requests running at Ctrl-C get to finish before their generation stops
GRACE_SECONDS = 5


class StoppingServer(uvicorn.Server):
    """uvicorn's server, telling the engine at the first Ctrl-C: waiting requests get 503 at once,
    running ones :data:`GRACE_SECONDS` to finish before their generation stops. uvicorn alone
    waits for every running and queued generation to end (minutes with a full queue), and with a
    shutdown timeout cancels requests mid-answer, each with a traceback."""

    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self.engine = engine
        self._grace = threading.Timer(GRACE_SECONDS, engine.close)
        self._grace.daemon = True  # a server that finished sooner exits without waiting for it

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            self.engine.stop_accepting()
            self._grace.start()
        else:  # a second signal forces the exit: stop generating now, so no thread is inside torch as it ends
            self._grace.cancel()
            self.engine.close(timeout=2)
        super().handle_exit(sig, frame)


def run_server(app: FastAPI, host: str, port: int, log_config: dict[str, Any] | None = None) -> None:
    """Serve ``app`` (from :func:`finjust.serve.create_app`) until Ctrl-C or SIGTERM.

    ``log_config``: a ``logging.config.dictConfig`` for uvicorn's loggers, which the ``finjust
    serve`` command passes (uvicorn's own); None leaves the process's logging as it is.
    """
    # uvicorn's own shutdown timeout is a backstop: the engine has stopped generating by then
    config = uvicorn.Config(app, host=host, port=port, log_level="info", log_config=log_config,
                            timeout_graceful_shutdown=GRACE_SECONDS + 5)  # fmt: skip
    StoppingServer(config, app.state.engine).run()
