"""Model registry: discovery and metadata of local GGUF models."""
