"""Pure scoring: ranking and blending, batch scoring, the ANN item index, diversity, coverage.
Plain arrays in, ranked items out; below both serving and the model code that fits blends."""
