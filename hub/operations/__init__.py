"""People's work on stock: inbound, putaway, transfers, outbound, verification, counts,
adjustments. Each operation posts through ``hub.stock.ledger``."""
