"""The contract between warelink's parts: message types, wire form, topics, device codecs.

Sans-I/O: bytes in, events out; events in, bytes out. Imports nothing else of warelink.
"""
