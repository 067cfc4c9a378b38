"""Local inference with transformers in this process: loading, generation and streaming, KV-cache reuse,
constrained decoding and prompt-based tool calls. ``HuggingFacePipeline`` (pipeline.py) is its backend."""
