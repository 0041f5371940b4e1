"""TensorFlow Serving's REST API for one raw-text classifier, as a Starlette app.

Endpoints (existing TF Serving clients work unchanged; JSON shapes as TF
Serving's, see protocol.py for predict):
  GET  /v1/models/<name>[/versions/<v>]           -> {"model_version_status": [...]}
  GET  /v1/models/<name>[/versions/<v>]/metadata  -> {"model_spec", "metadata":
                                                      {"signature_def": ...}}
  POST /v1/models/<name>[/versions/<v>]:predict   -> {"predictions"} / {"outputs"}
  GET  /v1/models/<name>/stats   (ours) the batcher's counters, for load tests
  GET  /healthz, /v1/health      (ours) {"status": "ok"} for load balancers
Errors are {"error": "<one line>"}: 400 bad request, 404 unknown model, version
or path, 405 wrong method, 413 body over max_request_bytes.
"""

import contextlib
import dataclasses
import importlib.util
import re
import socket

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Route

from modeling.serving import batching
from modeling.serving import model as model_lib
from modeling.serving import protocol
from pipeline.core.errors import ConfigError

_PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                   r"(?:/(?P<page>metadata|stats)|:(?P<verb>[A-Za-z]+))?$")
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
HTTP_IMPLEMENTATIONS = ("auto", "h11", "httptools")
LOOPS = ("auto", "asyncio", "uvloop")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServeConfig:
  """tools/serve.py's settings; TF Serving's REST port and a 1 MiB body by default."""
  model_dir: str
  model_name: str = "model"
  host: str = "127.0.0.1"
  port: int = 8501
  max_batch_size: int = 32
  batch_timeout_ms: float = 0.0
  max_request_bytes: int = 1 << 20
  max_instances: int = 256
  bucket_rows: int = 0  # model.ServedModel: 0 = one call per batch
  http: str = "auto"  # uvicorn's HTTP parser: auto (httptools if installed) | h11 | httptools
  loop: str = "auto"  # uvicorn's event loop: auto (uvloop if installed) | asyncio | uvloop

  def __post_init__(self):
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.model_name or ""):
      raise ConfigError(f"--model_name {self.model_name!r}: letters, digits, _ . - only")
    if not 0 <= self.port <= 65535:
      raise ConfigError(f"--port {self.port} is not a TCP port")
    for name in ("max_batch_size", "max_request_bytes", "max_instances"):
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name} must be at least 1, not {getattr(self, name)}")
    if self.bucket_rows < 0:
      raise ConfigError(f"--bucket_rows must be >= 0, not {self.bucket_rows}")
    if self.batch_timeout_ms < 0:
      raise ConfigError(f"--batch_timeout_ms must be >= 0, not {self.batch_timeout_ms}")
    for name, allowed in (("http", HTTP_IMPLEMENTATIONS), ("loop", LOOPS)):
      value = getattr(self, name)
      if value not in allowed:
        raise ConfigError(f"--{name} {value!r}: one of {', '.join(allowed)}")
      if value in ("httptools", "uvloop") and importlib.util.find_spec(value) is None:
        raise ConfigError(f"--{name} {value}: not installed (pip install {value}, or auto)")


def error(status, message, headers=None):
  return JSONResponse({"error": message}, status, headers=headers)


def status_json(info):
  return {"model_version_status": [{
      "version": str(info.version), "state": "AVAILABLE",
      "status": {"error_code": "OK", "error_message": ""}}]}


def metadata_json(info, name):
  return {"model_spec": {"name": name, "signature_name": "", "version": str(info.version)},
          "metadata": {"signature_def": {"signature_def": info.signature_defs}}}


async def read_body(request, limit):
  """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
  length = request.headers.get("content-length", "")
  if length.isdigit() and int(length) > limit:
    raise protocol.RequestError(413, f"request body of {length} bytes; at most {limit}")
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > limit:
      raise protocol.RequestError(413, f"request body over {limit} bytes")
    chunks.append(chunk)
  return b"".join(chunks)


def _route(match, info, config):
  """(endpoint kind, allowed method) of a matched path, or a RequestError."""
  name, version = match["name"], match["version"]
  if name != config.model_name:
    raise protocol.RequestError(404, f"Servable not found for request: Latest({name})")
  if version is not None and version != str(info.version):
    raise protocol.RequestError(
        404, f"Servable not found for request: Specific({name}, {version})")
  if match["verb"] is not None:
    if match["verb"] != "predict":
      raise protocol.RequestError(
          404, f"unsupported :{match['verb']}; this server serves :predict")
    return "predict", "POST"
  if match["page"] == "stats" and version is not None:
    raise protocol.RequestError(404, "stats are per model, not per version")
  return match["page"] or "status", "GET"


async def _models(request):
  state = request.app.state
  match = _PATH.match(request.path_params["rest"])
  try:
    if match is None:
      raise protocol.RequestError(404, f"unknown path {request.url.path}")
    kind, method = _route(match, state.model.info, state.config)
    if request.method != method:
      raise protocol.RequestError(405, f"{request.method} not allowed here; use {method}")
    if kind == "predict":
      return JSONResponse(await _predict(request, state))
  except protocol.RequestError as e:
    return error(e.status, e.message, {"Allow": method} if e.status == 405 else None)
  if kind == "metadata":
    return JSONResponse(metadata_json(state.model.info, state.config.model_name))
  if kind == "stats":
    return JSONResponse(state.batcher.stats_json())
  return JSONResponse(status_json(state.model.info))


async def _predict(request, state):
  body = await read_body(request, state.config.max_request_bytes)
  parsed = protocol.parse_predict(body, state.model.info.inputs, state.config.max_instances)
  outputs = await state.batcher.predict(parsed.text_a, parsed.text_b)
  return protocol.format_predictions(outputs, parsed.columnar)


async def _health(request):
  del request
  return JSONResponse({"status": "ok"})


async def _http_error(request, exc):
  del request
  return error(exc.status_code, exc.detail)


async def _server_error(request, exc):
  """A bug or a failed model call: TF Serving's error shape (uvicorn logs the traceback)."""
  del request
  lines = str(exc).strip().splitlines()
  return error(500, f"internal error: {type(exc).__name__}: {lines[0] if lines else ''}")


def create_app(served, config):
  """The ASGI app serving `served` (a model.ServedModel) with `config`'s limits."""
  batcher = batching.Batcher(served.predict, config.max_batch_size, config.batch_timeout_ms)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    del app
    await batcher.start()
    try:
      yield
    finally:
      await batcher.stop()

  app = Starlette(routes=[Route("/healthz", _health), Route("/v1/health", _health),
                          Route("/v1/models/{rest:path}", _models, methods=ALL_METHODS)],
                  exception_handlers={HTTPException: _http_error, Exception: _server_error},
                  lifespan=lifespan)
  app.state.model, app.state.config, app.state.batcher = served, config, batcher
  return app


def bind(host, port):
  """A listening socket, bound before the start-up line so the line is true."""
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only for that
  # protocol, and without it a response waits ~40 ms for the client's delayed ACK.
  sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    raise ConfigError(f"--host {host} --port {port}: {e.strerror or e}") from None
  return sock


def serve(config):
  """Loads config.model_dir and serves it until interrupted (uvicorn)."""
  import uvicorn  # pylint: disable=import-outside-toplevel
  served = model_lib.ServedModel(config.model_dir, config.bucket_rows)
  info = served.info
  sock = bind(config.host, config.port)
  host, port = sock.getsockname()[:2]
  print(f"serve: {config.model_name} version {info.version} ({info.export_dir}; "
        f"{'pair' if info.pair else 'single'} text, labels {list(info.labels)}) at "
        f"http://{host}:{port}/v1/models/{config.model_name}", flush=True)
  uvicorn.Server(uvicorn.Config(create_app(served, config), log_level="warning",
                                http=config.http, loop=config.loop)).run(sockets=[sock])
