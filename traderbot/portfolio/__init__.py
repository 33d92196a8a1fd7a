"""Portfolio construction: optimizers, position sizing, tax lots."""
