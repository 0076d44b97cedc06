"""Image -> tensors: data sets, safe image loading, face detection and crops,
backbone features. Depends only on ``neural`` (for the backbones)."""
