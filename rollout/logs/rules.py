"""Which programs and line shapes the log parsers read: the one place each rule is written.

Both paths read these tables. The Python parsers (``parse``, ``postfix``, ``imapd``,
``proxies``, ``exim``) dispatch on them and build their patterns from them; the C line
classifier (``_linescan.c``) is handed ``classifier_rules()`` when a scan starts and skips
only what they say can never be an event. A program or shape added here is read by
both; tests/test_log_rules.py fails when the C would skip a line Python reads.
"""

from __future__ import annotations

import re

# -- programs ------------------------------------------------------------------------------

POSTFIX = "postfix"  # every Postfix instance's program starts so: postfix, postfix-out, postfix/submission/smtpd
DOVECOT = "dovecot"
EXIM_PROGRAMS = ("exim",)
EXIM_PREFIXES = ("exim4",)  # Debian's exim4 packages: exim4, exim4-daemon-heavy
NGINX_PROGRAMS = ("nginx",)
PERDITION_PROGRAMS = ("perdition",)
PERDITION_PREFIXES = ("perdition.",)  # perdition.imap4s, perdition.pop3s
# program → service (docs/detection.md §5)
COURIER_PROGRAMS = {
    "pop3d": "pop3",
    "pop3d-ssl": "pop3",
    "courierpop3login": "pop3",
    "imapd": "imap",
    "imapd-ssl": "imap",
    "imaplogin": "imap",
}
UW_PROGRAMS = {"ipop3d": "pop3", "imapd": "imap"}
# Cyrus: the daemon is the program's last part ("cyrus/imaps", "imaps")
CYRUS_DAEMONS = {"pop3": "pop3", "pop3s": "pop3", "imap": "imap", "imaps": "imap"}
# a Cyrus login under a site's own service name ("sloti24t04/imapmail"):
# any "prefix/name" program whose message starts so
CYRUS_LOGIN = "login: "

# -- Postfix daemons and shapes --------------------------------------------------------------

SMTPD = "smtpd"
QMGR = "qmgr"
PICKUP = "pickup"
REMOTE_DAEMONS = ("smtp", "lmtp")  # the only ones that can relay (detection.Detector._has_remote_recipient)
LOCAL_DAEMONS = ("local", "virtual", "pipe", "error", "discard", "relay", "retry")  # read only for "queued as"
DELIVERY_DAEMONS = frozenset(REMOTE_DAEMONS + LOCAL_DAEMONS)
QMGR_REMOVED = "removed"  # qmgr "QID: removed": the message left the queue
QUEUE_ACTIVE = "(queue active)"  # qmgr "QID: from=<…>, size=…, nrcpt=1 (queue active)": the sender
SENDER_FIELDS = ("size", "status")  # what follows "from=<…>, " in that line
DELIVERY_TO = "to="  # smtp/lmtp "QID: to=<…>, relay=…, status=…"
QMGR_EXPIRED = ", status=expired"  # qmgr "QID: from=<…>, status=expired, returned to sender": a notice given up
CLEANUP = "cleanup"  # read only for our own notices' Message-ID
NOTICE_MESSAGE_ID = (
    "message-id=<rollout."  # cleanup "QID: message-id=<rollout.…>": one of our notices (logs/deliveries.py)
)
WARNING = "warning:"  # smtpd warnings: SASL failures
SMTPD_SESSION = ("connect from", "disconnect from", "lost connection", "timeout")  # smtpd lines that are no event
QUEUED_AS = "queued as"  # a local delivery that hands the message on (a content filter's re-injection)

# -- Dovecot shapes ------------------------------------------------------------------------

DOVECOT_INFO = "Info: "  # Dovecot 1.x: "dovecot: Info: imap-login: …", and "imap-login: Info: Login: …"
DOVECOT_LOGIN_SERVICES = ("pop3", "imap")  # "<service>-login: Login: user=<…>, …"
DOVECOT_LOGIN_VERBS = ("Login", "Logged in")
DOVECOT_END_SERVICES = ("pop3", "imap", "POP3", "IMAP")  # "<service>(user)<pid><session>: Disconnected …"
DOVECOT_END_VERBS = ("Disconnected", "Logged out")


def alternatives(words: tuple[str, ...] | list[str]) -> str:
    """A regular expression group matching any of ``words`` literally."""
    return "(?:" + "|".join(re.escape(w) for w in words) + ")"


def other_programs() -> frozenset[str]:
    """Programs besides Postfix and Dovecot whose lines Python parses, by exact name."""
    return frozenset((*EXIM_PROGRAMS, *NGINX_PROGRAMS, *PERDITION_PROGRAMS, *COURIER_PROGRAMS, *UW_PROGRAMS))


def classifier_rules() -> dict[str, str | tuple[str, ...]]:
    """The tables as the C classifier takes them (``_linescan.rules``): strings and tuples of strings."""
    return {
        "postfix": POSTFIX,
        "dovecot": DOVECOT,
        "programs": tuple(sorted(other_programs())),
        "program_prefixes": (*EXIM_PREFIXES, *PERDITION_PREFIXES),
        "daemons": tuple(CYRUS_DAEMONS),
        "cyrus_login": CYRUS_LOGIN,
        "smtpd": SMTPD,
        "qmgr": QMGR,
        "pickup": PICKUP,
        "remote_daemons": REMOTE_DAEMONS,
        "local_daemons": LOCAL_DAEMONS,
        "qmgr_removed": QMGR_REMOVED,
        "queue_active": QUEUE_ACTIVE,
        "sender_fields": SENDER_FIELDS,
        "delivery_to": DELIVERY_TO,
        "qmgr_expired": QMGR_EXPIRED,
        "cleanup": CLEANUP,
        "notice_id": NOTICE_MESSAGE_ID,
        "warning": WARNING,
        "smtpd_session": SMTPD_SESSION,
        "queued_as": QUEUED_AS,
        "dovecot_info": DOVECOT_INFO,
        "login_services": DOVECOT_LOGIN_SERVICES,
        "login_verbs": DOVECOT_LOGIN_VERBS,
        "end_services": DOVECOT_END_SERVICES,
        "end_verbs": DOVECOT_END_VERBS,
    }
