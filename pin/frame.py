"""The VLM's square input frame, in pixels: boxes in prompts and answers, the grid lines and the
COCO size buckets (small < 32^2, large >= 96^2) are all measured in a FRAME x FRAME picture.

The frame is a coordinate system, not the resolution the encoder sees: at a higher encoder
resolution (paper Tab. 3, ``vlm.image_size`` 448 / 364) the picture is squashed to the encoder's
input instead, and boxes stay on the grid of the 224 frame (so the size buckets keep their meaning).
"""
from pin.errors import PinError

FRAME = 224


def model_side(input_size: int) -> int:
    """The square an image is squashed to before the VLM's own transform: the frame, or the
    encoder's input when that is larger, so the encoder gets real pixels, not a 224-px picture
    blown up. (At or below 224 this is the frame, whose resize the transform then does.)"""
    return max(FRAME, int(input_size))


def check_composite_size(composite: int, input_size: int) -> None:
    """Refuse training pictures smaller than the encoder's input: they would reach it upsampled."""
    if composite < input_size:
        raise PinError(f"compose.image_size={composite} is below the vision encoder's input "
                       f"vlm.image_size={input_size}: the composites would reach it upsampled; "
                       f"set compose.image_size={input_size} (boxes stay on the 224 frame's grid)")
