"""Use cases, one function each: what a command or a scheduler job does.

Each takes the ``Runtime`` (settings, clock, actor, session factory), owns its
transaction, and returns a value for the caller to print.
"""
