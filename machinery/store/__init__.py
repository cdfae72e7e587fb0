"""Stores: the RegistryStore and EventStore ports, on SQLite (embedded, the default) and on MongoDB."""
