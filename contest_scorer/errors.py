"""The scorer's single error type: input that would make a score wrong."""


class ScoringError(ValueError):
    """Refused input; the message names what is wrong and what to do."""
