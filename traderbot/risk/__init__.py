"""Risk: VaR and ES, stress scenarios, the pre-trade gate, circuit breakers, the risk report."""
