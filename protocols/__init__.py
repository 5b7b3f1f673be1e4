"""Pure protocol code: parsers, builders, verifiers and state machines.

Nothing here imports Twisted or performs I/O other than through arguments, so the
package can be reused by offline tools (archive verifiers, a vendor's validator).
"""
