"""Notify: the warning campaign, rendering notices, sending them (mailer, workers), and tracking deliveries.

Imports only the foundation (models, db, logs, …); scan, plan and support build on it.
"""
