"""Streaming recognition over websockets: ``slimasr serve`` and its load test ``slimasr bench-server``.

- :mod:`slimasr.serve.server`    :class:`AsrServer` / :func:`run_server`: asyncio (``websockets``), one stream per
  connection, decoding on worker threads, /healthz and /metrics, limits, graceful SIGTERM; scale-out is
  horizontal (independent processes behind a load balancer; see the module docstring).
- :mod:`slimasr.serve.protocol`  the sherpa-onnx and WeNet protocols as a pure state machine (messages in,
  actions out).
- :mod:`slimasr.serve.endpoint`  sherpa-onnx's endpoint rules, so one connection can stream for hours.
- :mod:`slimasr.serve.loadtest`  N real-time clients; latency percentiles; the largest N that stays real time.

Torch-free, like :mod:`slimasr.runtime` (only the one-off export of the default model runs torch, in another
process).
"""
from .endpoint import EndpointConfig, EndpointRule, Endpointer
from .protocol import CloseCode, ProtocolHandler, Transcript
from .server import AsrServer, ServerConfig, ensure_default_export, run_server

__all__ = ["AsrServer", "CloseCode", "EndpointConfig", "EndpointRule", "Endpointer", "ProtocolHandler",
           "ServerConfig", "Transcript", "ensure_default_export", "run_server"]
