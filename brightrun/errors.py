"""The project's one bad-input error."""


class ConfigError(Exception):
    """Input a user can fix (a name, a path, a key, a value, a run in the wrong state): the CLIs print the
    message and exit 2, the jobs service answers 4xx. The message names the file, key or run."""
