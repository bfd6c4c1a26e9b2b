class PinError(RuntimeError):
    """A user-facing failure: bad input, missing file or model. Stages print it as one line."""
