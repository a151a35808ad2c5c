"""The one exception family protocol decoders raise on bad input."""


class DecodeError(ValueError):
    """Input bytes (or text) that do not form a valid message of the protocol."""
