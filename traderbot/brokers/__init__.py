"""Brokers behind the `Broker` port: the paper venue, Alpaca, Interactive Brokers, a router, and the factory that picks one."""
