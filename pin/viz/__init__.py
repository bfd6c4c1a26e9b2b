"""Pictures for people: the PIN similarity map (paper Fig. 9), training curves, the evaluation
gallery and mIoU-by-size bars, the figures stage (``figures.run_figures``), and the one way they
become PNG files (``png.save_png``)."""
