"""Examples of extending the worker app (``worker.extensions``)."""
