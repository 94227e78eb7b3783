"""LoRIF query service (FastAPI) over a finished index.

app.py (factory: wiring only) -> middleware.py (key, body, media type, readiness) ->
routes/ (one module per feature) -> runtime.py (the loaded index and model, cache, batcher,
metrics) -> batcher.py (asyncio micro-batches, one worker thread owns the model) ->
scorer.py (one scan per batch through indexer.query.QueryEngine) ; cache.py (Redis or LRU),
protocol.py (schemas), errors.py (problem+json), settings.py (LORIF_* settings).

It imports ``indexer`` (through its public reader/query API), never the reverse.
"""
