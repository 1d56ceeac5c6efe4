"""Streaming recognition over websockets: ``slimasr serve`` and its load test ``slimasr bench-server``.

- :mod:`slimasr.serve.server`    :class:`AsrServer` / :func:`run_server`: asyncio (``websockets``), one stream per
  connection, decoding on worker threads, /healthz and /metrics, limits, graceful SIGTERM; scale-out is
  horizontal (independent processes behind a load balancer; see the module docstring).
- :mod:`slimasr.serve.protocol`  the sherpa-onnx and WeNet protocols as a pure state machine (messages in,
  actions out).
- :mod:`slimasr.serve.endpoint`  sherpa-onnx's endpoint rules, so one connection can stream for hours.
- :mod:`slimasr.serve.access`    bearer tokens (401), allowed browser origins (403), TLS, token-free logs.
- ``static/``                     the browser page served at ``GET /`` (microphone or file, live results).
- :mod:`slimasr.serve.loadtest`  N real-time clients; latency percentiles; the largest N that stays real time.

Torch-free, like :mod:`slimasr.runtime` (only the one-off export of the default model runs torch, in another
process).
"""
from .access import AccessPolicy
from .endpoint import EndpointConfig, EndpointRule, Endpointer
from .protocol import CloseCode, ProtocolHandler, Transcript
from .server import AsrServer, ServerConfig, ensure_default_export, run_server

__all__ = ["AccessPolicy", "AsrServer", "CloseCode", "EndpointConfig", "EndpointRule", "Endpointer",
           "ProtocolHandler", "ServerConfig", "Transcript", "ensure_default_export", "run_server"]
