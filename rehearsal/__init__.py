"""A rehearsal of the paper profile: tiny random-weight stand-ins of every model and data set the
paper needs, written in the real on-disk formats, and ``dvc exp run`` with the README's flags on
them (``scripts/rehearse_paper.py``, ``tests/test_rehearsal.py``)."""
