"""Devices' work: the ingest worker, its commit, the device rules, commands, quarantine.

Above ``hub.operations``: the device rules apply device events through the same
operations people use.
"""
