"""``llamahomed`` subcommands, one module each: ``add_parser(sub, common)`` and ``run(args, settings)``."""
