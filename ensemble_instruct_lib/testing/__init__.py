"""Test doubles and local infrastructure, never part of a real run's method.

`fake` holds deterministic fake LMs that speak each prompting method's formats (so the whole
pipeline runs in unit tests and offline demos), `tiny` builds random-weight GPT-2, Llama and T5
checkpoints locally (real transformers code paths, no download), and `servers` starts real
OpenAI-compatible servers (transformers serve, vLLM) on 127.0.0.1 for tests and demos.

They are chosen at the edge: tests, notebooks and the command line pass them in (backends by
model name, or a function building them from a config); no other module of the package imports
this one (``tests/test_layers.py``).
"""
