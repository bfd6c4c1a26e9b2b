"""PIN: Positional Insert unlocks object localisation abilities in frozen VLMs."""

__version__ = "0.1.0"
