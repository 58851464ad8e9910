"""The detector: decoding, face finding, the page cut, views, the networks, checkpoints and the one scoring path.

The scanner scores with it and `training` trains and evaluates with it; nothing here imports `training`.
"""
