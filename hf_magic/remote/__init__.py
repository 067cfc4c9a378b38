"""Remote inference through huggingface_hub's InferenceClient: Inference Providers, TGI and any
OpenAI-compatible server. ``HuggingFaceEndpoint`` (endpoint.py) is its backend."""
