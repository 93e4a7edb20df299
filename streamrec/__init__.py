"""streamrec: a real-time streaming recommender."""

__version__ = "0.2.0"
