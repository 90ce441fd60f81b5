"""Subcommands of the ``sft-conformance`` command line (see :mod:`sft_conformance.cli`)."""
