"""`rollout web`: the read-only support desk in the browser (WSGI, served by waitress).

``app`` routes and renders over ``rollout.support.lookup`` and ``rollout.support.status``; ``accounts`` keeps the
logins; ``sessions`` signs cookies and limits failed logins; ``pages`` has the cohort listing.
"""
