"""Data package: the model catalog (catalog.toml), installed as llamahomed.catalog_data."""
