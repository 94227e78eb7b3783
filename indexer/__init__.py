"""LoRIF indexer: turn (model, training examples) into a low-rank influence index.

Pipeline (one small module per stage):
    data -> featurize (capture + projection) -> factorize -> index writer -> curvature -> scoring
"""

__version__ = "0.1.0"
FORMAT_VERSION = 1
