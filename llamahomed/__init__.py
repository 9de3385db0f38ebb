"""llamahomed: a local LLM daemon serving GGUF models through llama.cpp."""

__version__ = "0.1.0"
__all__ = ["__version__"]
