"""The systemd user unit and the launchd agent plist, shipped as package data."""
