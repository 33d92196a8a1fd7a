"""Execution: the order manager and reconciliation, TWAP and VWAP."""
