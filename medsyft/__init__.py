"""The medsyft command line: one entry point whose subcommands come from each room."""
