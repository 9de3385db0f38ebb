"""The service layer: validated requests -> placement -> a Generation and its typed events."""
