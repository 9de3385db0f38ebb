"""Core: settings, config store, errors, files, resources, tokens. Imports no other layer."""
