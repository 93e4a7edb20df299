"""streamrec: a real-time streaming recommender."""

__version__ = "0.1.0"
