"""The exceptions obsd raises on purpose; imports nothing from obsd."""


class ObsdError(Exception):
    """Base of every error obsd raises on purpose."""


class ParseError(ObsdError, ValueError):
    """An input could not be parsed; the message says what is wrong with it."""


class ConfigError(ObsdError):
    """The configuration is invalid; ``problems`` holds every ``key.path: reason`` line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class OutputError(ObsdError):
    """A destination refused or failed a delivery."""
