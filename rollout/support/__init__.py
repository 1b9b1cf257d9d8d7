"""Support: the status report, the customer lookup, support accounts and the support web.

Reads what scan, plan and notify wrote; the top area below the scheduler and the CLI.
"""
