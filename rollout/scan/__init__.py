"""Scan: mail logs → legacy sightings (detection), the mailbox inventory, and their use cases.

Imports only the foundation (logs, models, db, …) and notify (a scan records notice deliveries it sees).
"""
