"""The change feed and its readers: what is committed, pushed to every screen."""
