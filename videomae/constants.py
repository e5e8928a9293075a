"""Constants shared by the data pipeline and the ops: the ImageNet statistics clips are normalized with.

Import-light on purpose (data loader workers import it): no torch, no ops.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
