"""The demo and what it is made of, outside the core: Shakespeare's speeches (corpora/), the
small Llama trained on them (lm_training.py, toy.py) and ``lorif demo`` itself (demo.py)."""
