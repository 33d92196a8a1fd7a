"""Market data: the exchange calendar and sessions, validated bars, the embedded sample."""
