"""The VLM's square input frame, in pixels: boxes in prompts and answers, the grid lines and the
COCO size buckets (small < 32^2, large >= 96^2) are all measured in a FRAME x FRAME picture."""
FRAME = 224
