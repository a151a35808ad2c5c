"""The stock core: the ledger, balances, exceptions, the audit trail and sites.

The bottom layer of the hub: it imports nothing of the hub above it (the import
contract in pyproject.toml says so).
"""
