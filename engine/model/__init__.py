"""The model: the settings, the continuous tokenizer, the LLM backbone, the DeftRec heads, diffusion, the
retriever, CF, ranking and metrics, and the DeftRecModel facade. Knows no run directory: imports nothing of
engine.services (tests/test_headless.py checks it)."""
