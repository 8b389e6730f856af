"""The LLM backbone (§2.4.1), one module per concern: convert (the packaged SmolLM2 GGUF → a safetensors
folder), loading (a causal LM and its tokenizer, offline; the run's LLM fingerprint), lora (the placeholder token
and the LoRA adapters), batches (token batches and fitted prompts), continuous (splicing continuous tokens),
forward (LM loss and hidden states), generation (greedy decoding with the response's hidden states) and tiny
(the tiny test LLM). The condition c (§2.4.2) is a DeftRec head: engine/model/deftrec.py `ConditionHead`."""
