"""Pictures for people: the PIN similarity map (paper Fig. 9), training curves, and the offline
HTML template for ``dvc plots show``."""
