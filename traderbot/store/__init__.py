"""The store: schema, connections and migrations, pipeline runs, and the ledger's reads and writes (the only SQL)."""
