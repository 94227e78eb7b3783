"""Models and what they are trained on: loading (HF directory, GGUF, short names), tasks (how
examples become batches and per-example losses) and the featurizer (model + task + projections
-> per-example projected gradients, the same code for training examples and queries)."""
