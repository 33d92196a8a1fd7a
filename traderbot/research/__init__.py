"""Research: the strategy, backtests, features, honest statistics, forecasting models, the trial and model registries, studies."""
