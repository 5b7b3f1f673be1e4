"""Storage behind one interface (SQLite and PostgreSQL): see :mod:`gateway.store.db`."""
