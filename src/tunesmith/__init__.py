"""tunesmith: text-to-music with MusicGen, stored in local or S3-compatible storage."""

__version__ = "0.1.0"
__all__ = ["__version__"]
