"""The on-disk index (docs/index-format.md): the HDF5 format, its writer and reader, and the
factor stores that stream rows to the engine (a reader thread fills a ring of reused buffers).

codec (storage dtypes <-> float32) -> store (memory-mapped or in-memory rows; implements the
engine's RowSource) -> streaming (BlockReader) ; format (names, manifest, fingerprint) ->
writer (partial file, done mask, publish) and reader (Index: validated, read-only).
"""
