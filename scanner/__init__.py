"""fauxscan: a distributed batch scanner for fake, manipulated and AI-generated face images."""

__version__ = "0.1.0"
