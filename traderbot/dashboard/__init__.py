"""The Voila dashboards' widgets, one module per page, and the launcher."""
