"""The HTTP service (`agrl serve`): the FastAPI app and micro-batcher (app.py), wire shapes and OpenAPI
(wire.py), TEI/Cohere rerank routes (rerank.py), Prometheus metrics (prometheus.py), and the uvicorn server
with SIGTERM drain and header timeout (server.py)."""
