"""Subcommands of ``llamahomed``: each module has ``add_parser(sub, common)`` and ``run(args, settings)``."""
