"""Request handlers, one module per dialect or resource."""
