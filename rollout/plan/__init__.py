"""Plan and enforcement: the cohort partition, plans, gates, holdback, retirement, and stepping a plan.

Imports only the foundation (enforcement backends, models, db, …) and notify (a switch-off waits for
the campaign's last wave).
"""
