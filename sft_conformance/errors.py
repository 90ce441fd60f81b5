"""The one error type of the command line and the plugin's configuration: exit code 2."""

from __future__ import annotations


class ConfigurationError(Exception):
    """A usage or configuration error: a bad target, tokenizer, profile, option or file.

    Its message is one line that names the bad input; the CLI prints it and exits 2, the pytest
    plugin turns it into a ``pytest.UsageError``. Everything else that goes wrong inside a check
    is a result of that check, never this error.
    """
