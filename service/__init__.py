"""LoRIF query service (FastAPI): serves attribution queries over a finished index.

It imports the featurizer and the index reader from :mod:`indexer`; never the reverse.
The HTTP API, batcher and cache are built in the service issue; until then the reference
scorer is available as ``lorif query`` and :class:`indexer.query.QueryEngine`.
"""
