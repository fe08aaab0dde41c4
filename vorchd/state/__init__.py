"""
A daemon's read model of the fleet: the state in memory (L{model}), as numbers for
placement (L{table}), fed from Redis' change stream (L{feed}), and the answers made from
it (L{views}).
"""
