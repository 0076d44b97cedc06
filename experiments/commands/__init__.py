"""CLI commands; each module registers itself with ``experiments.cli.command``."""
