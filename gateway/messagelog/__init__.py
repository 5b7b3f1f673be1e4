"""The message log: store (:mod:`gateway.messagelog.store`), and later the timestamper and archiver."""
