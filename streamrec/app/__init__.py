"""Entry points: the CLI, one builder per worker role, the demo, replay, the trainer process."""
