"""The method's maths on tensors: no files, no models' I/O, no threads.

capture (hooks -> per-example projected gradients G~ (B, d1, d2)) -> factorize (G~ ~= L R^T) ->
layout (rows of factors) -> curvature (streamed randomized SVD of G^T G per layer; or
kronecker: K-FAC / EK-FAC from token-level moments, the eigenvalues refit to the rows) ->
scoring (P_q = H^-1 G~_q once per query, then one GEMM per layer and block of rows) and
explain (one pair's score split over token positions).

Streams of rows come in through :class:`~indexer.engine.layout.RowSource`, which the storage
package implements; the engine never imports storage.
"""
