"""A private Postfix + Dovecot on one loopback address, for end-to-end tests.

It is the real thing, set up the way docs/enforcement.md describes a provider:
POP-before-SMTP emulated by a Dovecot post-login script that adds the client IP
to a ``check_client_access`` hash map; SMTP AUTH (SASL via Dovecot) for
submissions; our own enforcement map in front of the legacy one::

    smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated,
        check_sender_access hash:<dir>/smtp-after-pop-disabled,
        check_client_access hash:<dir>/pop-before-smtp, reject_unauth_destination

Mail to the local domain is delivered by Postfix ``virtual(8)`` into maildirs that
Dovecot serves; mail to any other domain is relayed to an ``smtp-sink`` on the
same loopback address, so the log has real ``to=… relay=… status=sent`` lines.
``mynetworks`` holds only an unused address: every test client is "outside".

Usage from a test (root, no systemd needed; everything lives under one temp dir)::

    from tests.mailstack import MailStack, Mailuser, mailstack_available

    pytestmark = [pytest.mark.slow,
                  pytest.mark.skipif(not mailstack_available(), reason="...")]

    with MailStack("127.0.0.20", [Mailuser("anna@example.org", "pw")]) as stack:
        stack.pop_login("anna@example.org", "pw", source="127.0.0.21")
        reply = stack.send("anna@example.org", ["bob@remote.test"], source="127.0.0.21")
        assert reply.accepted                      # legacy relay: IP is in the map
        stack.write_sender_map({"anna@example.org": "REJECT 5.7.1 switched off"})
        reply = stack.send("anna@example.org", ["bob@remote.test"], source="127.0.0.21")
        assert reply.code == 554 and "switched off" in reply.text
        reply = stack.send("anna@example.org", ["bob@remote.test"], source="127.0.0.21",
                           auth=("anna@example.org", "pw"))
        assert reply.accepted                      # SASL keeps working
        stack.wait_for_log(stack.postfix_log, "status=sent", count=2)

``stack.sender_map`` is the path of the enforcement map source (``.db`` next to
it); code under test may write it itself (write, ``postmap``, rename) — smtpd
re-opens a changed hash map on its own. ``stack.postfix_log`` and
``stack.dovecot_log`` are the ``maillog_file`` and Dovecot ``log_path`` files.
Each test should use its own 127.0.0.x addresses (see the common brief).
On a failure to start, the exception message includes the daemons' logs.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

LOCAL_DOMAIN = "example.org"
MAIL_UID = 65534  # nobody: owns the maildirs (Postfix virtual(8) and Dovecot)
MAIL_GID = 65534
START_TIMEOUT = 30.0
CLIENT_TIMEOUT = 10.0


class MailStackError(RuntimeError):
    """The stack could not start or did not do what was expected; the message has the logs."""


@dataclass(frozen=True)
class Mailuser:
    """A mailbox: its address, its password, and its POP/IMAP login when not the address."""

    address: str
    password: str
    login: str | None = None

    @property
    def user(self) -> str:
        return self.login or self.address


@dataclass(frozen=True)
class SmtpReply:
    """What the server answered to the first refused command, or to the end of DATA."""

    code: int
    text: str
    queue_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.code == 250


def mailstack_available() -> bool:
    """True when Postfix, Dovecot and smtp-sink are installed and we are root."""
    tools = ("postfix", "postmap", "postconf", "dovecot", "smtp-sink")
    return os.geteuid() == 0 and all(shutil.which(t) for t in tools)


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class MailStack:
    """Postfix (smtpd on ``address``), Dovecot (POP3 + IMAP) and an smtp-sink for remote mail."""

    def __init__(self, address: str, users: Iterable[Mailuser], *, root: Path | None = None) -> None:
        self.address = address
        self.users = list(users)
        # unix socket paths are limited to 108 bytes: keep the root short
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="ms", dir="/tmp"))
        self.postfix_dir = self.root / "postfix"
        self.dovecot_dir = self.root / "dovecot"
        self.maps_dir = self.root / "maps"
        self.log_dir = self.root / "log"
        self.mail_dir = self.root / "mail"
        self.postfix_log = self.log_dir / "postfix.log"
        self.dovecot_log = self.log_dir / "dovecot.log"
        self.sender_map = self.maps_dir / "smtp-after-pop-disabled"
        self.pop_map = self.maps_dir / "pop-before-smtp"
        self.smtp_port = free_port(address)
        self.pop3_port = free_port(address)
        self.imap_port = free_port(address)
        self.sink_port = free_port(address)
        self._sink: subprocess.Popen[bytes] | None = None
        self._postfix_started = False
        self._dovecot_started = False

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> MailStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for d in (self.postfix_dir, self.dovecot_dir, self.maps_dir, self.log_dir, self.mail_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # mkdtemp makes it 0700: the postfix user must get through
        os.chown(self.mail_dir, MAIL_UID, MAIL_GID)
        self.postfix_log.touch()
        self.dovecot_log.touch()
        try:
            self._start_sink()
            self._write_maps()
            self._write_dovecot_config()
            self._run(["dovecot", "-c", str(self.dovecot_dir / "dovecot.conf")], "start Dovecot")
            self._dovecot_started = True
            self._write_postfix_config()
            self._run(["postfix", "-c", str(self.postfix_dir), "start"], "start Postfix")
            self._postfix_started = True
            for port in (self.smtp_port, self.pop3_port, self.imap_port):
                self._wait_for_port(port)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every daemon we started; safe to call twice."""
        if self._postfix_started:
            subprocess.run(
                ["postfix", "-c", str(self.postfix_dir), "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
            self._postfix_started = False
        if self._dovecot_started:
            subprocess.run(
                ["doveadm", "-c", str(self.dovecot_dir / "dovecot.conf"), "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
            self._dovecot_started = False
        if self._sink is not None:
            self._sink.terminate()
            try:
                self._sink.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._sink.kill()
                self._sink.wait(timeout=10)
            self._sink = None

    def cleanup(self) -> None:
        """Stop, then remove the whole directory tree."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- clients ---------------------------------------------------------------

    def pop_login(self, user: str, password: str, *, source: str) -> None:
        """Log in over POP3 from ``source``, list the mailbox, quit (raises on a failed login)."""
        client = _BoundPOP3(self.address, self.pop3_port, source)
        try:
            client.user(user)
            client.pass_(password)
            client.stat()
        finally:
            client.quit()

    def imap_login(self, user: str, password: str, *, source: str) -> None:
        """Log in over IMAP from ``source``, select INBOX, log out (raises on a failed login)."""
        client = _BoundIMAP4(self.address, self.imap_port, source)
        try:
            client.login(user, password)
            client.select("INBOX")
        finally:
            client.logout()

    def failed_login(self, user: str, password: str, *, source: str, protocol: str = "pop3") -> bool:
        """Try a login expected to fail; True when the server refused it."""
        try:
            (self.pop_login if protocol == "pop3" else self.imap_login)(user, password, source=source)
        except (poplib.error_proto, imaplib.IMAP4.error):
            return True
        return False

    def send(
        self,
        sender: str,
        recipients: list[str],
        *,
        source: str,
        auth: tuple[str, str] | None = None,
        subject: str = "test",
        helo: str = "client.test",
    ) -> SmtpReply:
        """Send one message from ``source``; the reply to the first refused step or to DATA."""
        with smtplib.SMTP(
            self.address, self.smtp_port, local_hostname=helo, timeout=CLIENT_TIMEOUT, source_address=(source, 0)
        ) as smtp:
            smtp.ehlo(helo)
            if auth is not None:
                try:
                    smtp.login(*auth)
                except smtplib.SMTPAuthenticationError as exc:
                    return SmtpReply(exc.smtp_code, _text(exc.smtp_error))
            code, text = smtp.mail(sender)
            if code != 250:
                return SmtpReply(code, _text(text))
            accepted = 0
            refusal: SmtpReply | None = None
            for rcpt in recipients:
                code, text = smtp.rcpt(rcpt)
                if code in (250, 251):
                    accepted += 1
                elif refusal is None:
                    refusal = SmtpReply(code, _text(text))
            if not accepted:
                smtp.rset()
                assert refusal is not None
                return refusal
            body = f"From: <{sender}>\r\nTo: <{recipients[0]}>\r\nSubject: {subject}\r\n\r\nhello\r\n"
            code, text = smtp.data(body)
            reply_text = _text(text)
            queue_id = reply_text.rsplit("queued as ", 1)[1].strip() if "queued as " in reply_text else None
            return SmtpReply(code, reply_text, queue_id)

    # -- maps ------------------------------------------------------------------

    def write_sender_map(self, entries: Mapping[str, str]) -> None:
        """Replace our enforcement map (key → action), the way a provider would: write, postmap, rename."""
        self._replace_map(self.sender_map, entries)

    def clear_pop_before_smtp(self) -> None:
        """Forget every POP-before-SMTP authorisation (as if the daemon's entries expired)."""
        self._replace_map(self.pop_map, {})

    def stop_pop_before_smtp_writer(self) -> None:
        """Stop feeding the POP-before-SMTP map (as ops stop pop-before-smtp before the final step):
        from now on a POP login no longer adds the client IP."""
        (self.dovecot_dir / "postlogin.sh").write_text('#!/bin/sh\nexec "$@"\n')

    def pop_before_smtp_entries(self) -> list[str]:
        return [line.split()[0] for line in self.pop_map.read_text().splitlines() if line.strip()]

    def _replace_map(self, path: Path, entries: Mapping[str, str]) -> None:
        tmp = path.with_name(path.name + ".new")
        tmp.write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
        self._run(["postmap", "-c", str(self.postfix_dir), f"hash:{tmp}"], f"postmap {tmp}")
        os.replace(f"{tmp}.db", f"{path}.db")
        os.replace(tmp, path)

    # -- logs ------------------------------------------------------------------

    def wait_for_log(self, path: Path, needle: str, *, count: int = 1, timeout: float = 30.0) -> list[str]:
        """Wait until ``needle`` occurs in ``count`` lines of ``path``; return those lines."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in path.read_text(errors="replace").splitlines() if needle in line]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise MailStackError(f"{needle!r} seen {len(lines)} times in {path}, wanted {count}\n{self.logs()}")
            time.sleep(0.1)

    def wait_for_queue_empty(self, timeout: float = 30.0) -> None:
        """Wait until Postfix has delivered (or bounced) everything accepted so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queue = self.postfix_dir.parent / "spool"
            pending = [
                p
                for sub in ("incoming", "active", "deferred", "maildrop")
                for p in (queue / sub).rglob("*")
                if p.is_file()
            ]
            if not pending:
                return
            time.sleep(0.1)
        raise MailStackError(f"Postfix queue not empty after {timeout}s\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for path in (self.postfix_log, self.dovecot_log, self.log_dir / "sink.log"):
            text = path.read_text(errors="replace") if path.exists() else "(missing)"
            parts.append(f"--- {path} (last 40 lines)\n" + "\n".join(text.splitlines()[-40:]))
        return "\n".join(parts)

    # -- setup helpers -----------------------------------------------------------

    def _run(self, argv: list[str], what: str) -> None:
        # output goes to a file, not a pipe: a daemon that forks keeps a pipe open forever
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=60)
            except subprocess.TimeoutExpired:
                raise MailStackError(f"could not {what}: {' '.join(argv)} timed out\n{self.logs()}") from None
            out.seek(0)
            output = out.read().decode(errors="replace")
        if proc.returncode != 0:
            raise MailStackError(
                f"could not {what}: {' '.join(argv)} exited {proc.returncode}\n{output}\n{self.logs()}"
            )

    def _start_sink(self) -> None:
        log = open(self.log_dir / "sink.log", "wb")
        # -u: smtp-sink refuses to run as root; -c: count; 100 = backlog
        self._sink = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-c", f"{self.address}:{self.sink_port}", "100"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_for_port(self.sink_port)

    def _wait_for_port(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._sink is not None and self._sink.poll() is not None:
                raise MailStackError(f"smtp-sink exited with {self._sink.returncode}\n{self.logs()}")
            try:
                with socket.create_connection((self.address, port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise MailStackError(f"nothing listens on {self.address}:{port} after {START_TIMEOUT}s\n{self.logs()}")

    def _write_maps(self) -> None:
        os.chmod(self.maps_dir, 0o755)
        for path in (self.sender_map, self.pop_map):
            path.write_text("")
        (self.maps_dir / "virtual-mailboxes").write_text(
            "".join(f"{u.address} {u.user}/Maildir/\n" for u in self.users)
        )

    def _write_dovecot_config(self) -> None:
        d = self.dovecot_dir
        (d / "users").write_text(
            "".join(
                f"{u.user}:{{PLAIN}}{u.password}:{MAIL_UID}:{MAIL_GID}::{self.mail_dir}/{u.user}::\n"
                for u in self.users
            )
        )
        script = d / "postlogin.sh"
        postmap = shutil.which("postmap")
        # the emulated pop-before-smtp daemon: remember the client IP, rebuild the map, go on
        script.write_text(
            "#!/bin/sh\n"
            f'( flock 9; grep -qx "$IP OK" {self.pop_map} || {{ echo "$IP OK" >> {self.pop_map}'
            f" && {postmap} -c {self.postfix_dir} hash:{self.pop_map}; }} )"
            f" 9>{self.maps_dir}/pop-before-smtp.lock\n"
            'exec "$@"\n'
        )
        script.chmod(0o755)
        (d / "dovecot.conf").write_text(
            DOVECOT_CONF.format(
                root=self.root,
                dir=d,
                address=self.address,
                pop3_port=self.pop3_port,
                imap_port=self.imap_port,
                log=self.dovecot_log,
                mail=self.mail_dir,
                script=script,
                instance=self.root.name,
            )
        )

    def _write_postfix_config(self) -> None:
        d = self.postfix_dir
        spool = self.root / "spool"
        data = self.root / "data"
        spool.mkdir(exist_ok=True)
        data.mkdir(exist_ok=True)
        shutil.chown(data, "postfix")
        (d / "main.cf").write_text(
            POSTFIX_MAIN_CF.format(
                root=self.root,
                spool=spool,
                data=data,
                address=self.address,
                sink_port=self.sink_port,
                maps=self.maps_dir,
                log=self.postfix_log,
                log_dir=self.log_dir,
                mail=self.mail_dir,
                auth=self.dovecot_dir / "run" / "auth-client",
                uid=MAIL_UID,
                gid=MAIL_GID,
                domain=LOCAL_DOMAIN,
            )
        )
        (d / "master.cf").write_text(POSTFIX_MASTER_CF.format(address=self.address, port=self.smtp_port))
        for name in ("smtp-after-pop-disabled", "pop-before-smtp", "virtual-mailboxes"):
            self._run(["postmap", "-c", str(d), f"hash:{self.maps_dir / name}"], f"postmap {name}")


class _BoundPOP3(poplib.POP3):
    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=CLIENT_TIMEOUT)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


class _BoundIMAP4(imaplib.IMAP4):
    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=CLIENT_TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


# inet_interfaces = all: smtpd binds only the test address (master.cf); 127.0.0.x is no interface address
POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
myhostname = mx.{domain}
mydomain = {domain}
myorigin = {domain}
mydestination =
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.254/32
smtp_bind_address = {address}
maillog_file = {log}
maillog_file_prefixes = {log_dir}
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
biff = no
smtputf8_enable = no
alias_maps =
alias_database =
local_recipient_maps =
relayhost = [{address}]:{sink_port}
relay_domains =
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = hash:{maps}/virtual-mailboxes
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 100
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth}
smtpd_sasl_security_options = noanonymous
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_relay_restrictions =
smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated,
    check_sender_access hash:{maps}/smtp-after-pop-disabled,
    check_client_access hash:{maps}/pop-before-smtp,
    reject_unauth_destination
"""

POSTFIX_MASTER_CF = """\
{address}:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

DOVECOT_CONF = """\
instance_name = {instance}
base_dir = {dir}/run
state_dir = {dir}/state
listen = {address}
protocols = pop3 imap
log_path = {log}
info_log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 100
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {dir}/users
}}
userdb {{
  driver = passwd-file
  args = {dir}/users
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {address}
    port = {pop3_port}
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {address}
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3 {{
  executable = pop3 postlogin
}}
service imap {{
  executable = imap postlogin
}}
service postlogin {{
  executable = script-login {script}
  user = root
  unix_listener postlogin {{
  }}
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
}}
protocol pop3 {{
  pop3_uidl_format = %08Xu%08Xv
}}
"""
