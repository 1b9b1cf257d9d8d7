"""Worker processes of `rollout notify`: render every notice into a spool, then send from it.

Why processes: Jinja rendering, building the message and smtplib are Python
work that one interpreter runs on one core (the GIL); W workers use W cores.
Why a spool: the preflight renders every notice before the first send anyway,
so each notice is rendered once, kept in a spool file, and sent byte for byte.

The workers never touch the database. The parent keeps the ledger: it hands
out render chunks, then claims notices and gives each SMTP connection (a
"slot": one thread in a worker) one notice at a time, and records what the
slot reports. A worker that dies leaves its notice `sending` (uncertain),
exactly like a killed run; a parent that dies closes the pipes, and the workers
exit after the message in hand.

A worker is a fresh ``python -m rollout.notify.notify_workers`` (neither SQLAlchemy nor
click is imported: about 0.2 s and 25 MB), talking to the parent over
socketpairs. The spool files are unlinked temporary files (``$TMPDIR``, about
6 kB per notice) whose descriptors the workers inherit: nothing is left on disk,
even after SIGKILL.
"""

from __future__ import annotations

import json
import os
import pickle
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, NamedTuple, cast

from ..errors import DeliveryError
from .mailer import Delivery, RateLimiter, SmtpConnection
from .notices import (
    CampaignFacts,
    Envelope,
    NoticeBuildError,
    NoticeContext,
    NoticeFacts,
    Renderer,
    compose,
    notice_context,
)

RENDER_CHUNK = 200  # notices per render request: small enough to keep both workers busy to the end
RENDER_AHEAD = 2  # render requests a worker may have queued


Location = tuple[
    int, int, int
]  # a rendered notice: (worker's spool file, offset, length); a plain tuple pickles 5x faster


class Outcome(NamedTuple):
    """What a slot reports for one notice (as a plain tuple on the pipe).

    ``status``: sent | failed | deferred | error | died.
    """

    notice_id: int
    status: str
    reply: str
    to_address: str = ""
    customer_ref: str = ""


class Unbuildable(NamedTuple):
    """A notice that cannot be built (its address, its name): in place of its spool location."""

    customer_ref: str
    to_address: str
    reason: str


# --- the spool ---------------------------------------------------------------------------


def spool_record(ctx: NoticeContext, msg_id: str, message: bytes) -> bytes:
    """A JSON header line (recipient, customer, Message-ID), then the message bytes."""
    return json.dumps([ctx.to_address, ctx.customer_ref, msg_id]).encode() + b"\n" + message


def parse_record(record: bytes) -> tuple[str, str, str, bytes]:
    header, _, message = record.partition(b"\n")
    to_address, customer_ref, msg_id = json.loads(header)
    return to_address, customer_ref, msg_id, message


class Spool:
    """This worker's spool file (appended to) and every worker's (read from)."""

    def __init__(self, index: int, fds: list[int]) -> None:
        self.index, self.fds = index, fds
        self.end = os.fstat(fds[index]).st_size

    def append(self, record: bytes) -> Location:
        os.pwrite(self.fds[self.index], record, self.end)
        where = (self.index, self.end, len(record))
        self.end += len(record)
        return where

    def read(self, where: Location) -> bytes:
        spool, offset, length = where
        return os.pread(self.fds[spool], length, offset)


# --- the pipes ---------------------------------------------------------------------------


def _post(conn: Connection, value: Any) -> None:
    """``conn.send`` without multiprocessing's pickler class, built anew for every message:
    a job and its outcome cross a slot's pipe once per notice, in both processes."""
    conn.send_bytes(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


def _receive(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())


# --- the worker process --------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSetup:
    """Sent to a worker first: everything it needs, none of it from the environment or the database."""

    notices: Any  # NoticeSettings
    smtp: Any  # SmtpSettings
    outbox: str | None
    rate_per_second: float  # [smtp] rate_per_second; each worker is sent its share


def worker_main(control: Connection, slots: list[Connection], spool: Spool) -> None:
    """Render what the parent sends on ``control``; each slot thread sends what it gets on its pipe."""
    setup: WorkerSetup = control.recv()
    renderer, envelope = Renderer(setup.notices), Envelope.from_settings(setup.notices)
    limiter = RateLimiter(setup.rate_per_second)
    threads = [threading.Thread(target=_slot, args=(conn, setup, limiter, spool), daemon=True) for conn in slots]
    for thread in threads:
        thread.start()
    try:
        while (request := control.recv()) is not None:
            _, now, campaign, chunk = request
            control.send(_render(renderer, envelope, spool, now, campaign, chunk))
    except (EOFError, OSError):
        pass  # the parent is gone: its pipes are closed, so each slot stops after the message in hand
    for thread in threads:
        thread.join()


def _render(
    renderer: Renderer,
    envelope: Envelope,
    spool: Spool,
    now: Any,
    campaign: CampaignFacts,
    chunk: list[tuple[int, NoticeFacts]],
) -> tuple[str, Any]:
    """("rendered", [(notice id, Location)]) or ("failed", the error naming template and customer).

    The parent sends each notice's facts in plain values; the context is built here,
    in parallel, not in the process that keeps the ledger."""
    done: list[tuple[int, Location | Unbuildable]] = []
    try:
        for notice_id, facts in chunk:
            ctx = notice_context(campaign, facts, now)
            try:
                message = compose(renderer, envelope, ctx, facts.message_id, now)
            except NoticeBuildError as exc:  # this customer's address or name: they fail alone, named
                done.append((notice_id, Unbuildable(ctx.customer_ref, ctx.to_address, str(exc))))
                continue
            done.append((notice_id, spool.append(spool_record(ctx, facts.message_id, message))))
    except DeliveryError as exc:  # a template: every notice would fail the same way
        return "failed", str(exc)
    return "rendered", done


def _slot(conn: Connection, setup: WorkerSetup, limiter: RateLimiter, spool: Spool) -> None:
    """One SMTP connection (or the outbox): a job in, an ``Outcome`` out, until told to stop."""
    smtp = None if setup.outbox else SmtpConnection(setup.smtp, limiter)
    sender = Envelope.from_settings(setup.notices).from_address
    try:
        while (job := _receive(conn)) is not None:
            notice_id, where = job
            _post(conn, tuple(_deliver(notice_id, where, spool, smtp, sender, setup.outbox)))
    except (EOFError, OSError):
        pass
    finally:
        if smtp is not None:
            smtp.close()


def _deliver(
    notice_id: int, where: Location | bytes, spool: Spool, smtp: SmtpConnection | None, sender: str, outbox: str | None
) -> Outcome:
    """Send one spooled notice (``where``, or the record itself when the parent rendered it)."""
    to_address, customer_ref, msg_id, message = parse_record(where if isinstance(where, bytes) else spool.read(where))
    try:
        if smtp is None:
            delivery = Delivery("sent", f"outbox: {write_eml(Path(outbox or '.'), msg_id, message)}", 1)
        else:
            delivery = smtp.send(sender, to_address, message)
    except (DeliveryError, OSError) as exc:
        # The SMTP login or the outbox failed: the server never got this message.
        return Outcome(notice_id, "error", str(exc), to_address, customer_ref)
    return Outcome(notice_id, delivery.status, delivery.reply, to_address, customer_ref)


def write_eml(outbox: Path, msg_id: str, message: bytes) -> Path:
    path = outbox / (msg_id.strip("<>").split("@")[0] + ".eml")
    tmp = path.with_suffix(".eml.tmp")
    tmp.write_bytes(message)
    os.replace(tmp, path)  # a reader never sees half a message
    return path


def _main(argv: list[str]) -> None:
    """``python -m rollout.notify.notify_workers INDEX CONTROL_FD SLOT_FDS SPOOL_FDS`` (comma-separated fds)."""
    index, control, slots, spools = int(argv[0]), int(argv[1]), argv[2], argv[3]
    worker_main(
        Connection(control),
        [Connection(int(fd)) for fd in slots.split(",") if fd],
        Spool(index, [int(fd) for fd in spools.split(",")]),
    )


# --- the parent's side ---------------------------------------------------------------------


class Slot:
    """The parent's end of one SMTP connection in a worker."""

    def __init__(self, name: str, conn: Connection, worker: Worker) -> None:
        self.name, self.conn, self.worker = name, conn, worker

    def give(self, notice_id: int, where: Location | bytes) -> None:
        _post(self.conn, (notice_id, where))

    def take(self) -> Outcome:
        """The slot's report; a worker that died leaves its notice uncertain."""
        try:
            return Outcome(*_receive(self.conn))
        except (EOFError, OSError):
            code = self.worker.process.poll()
            return Outcome(
                -1,
                "died",
                f"a notify worker stopped unexpectedly (exit code {code}); its notice in flight is left uncertain",
            )


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    control: Connection
    queued: int = 0  # render requests not answered yet


class Workers:
    """The parent's handle on the worker processes: start them, render through them, give their slots jobs.

    Started lazily by the first ``render``: a run with nothing pending starts none.
    """

    def __init__(self, setup: WorkerSetup, processes: int, connections: int) -> None:
        self.setup, self.processes, self.connections = setup, max(1, processes), max(1, connections)
        self.workers: list[Worker] = []
        self.slots: list[Slot] = []
        self._reports = selectors.DefaultSelector()  # every slot's pipe, registered once

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.workers:
            return
        spools = [tempfile.TemporaryFile(prefix="rollout-notify-spool-") for _ in range(self.processes)]
        try:
            for index in range(self.processes):
                self._start_one(index, [f.fileno() for f in spools])
        finally:
            for f in spools:
                f.close()  # the workers hold their own descriptors

    def _start_one(self, index: int, spool_fds: list[int]) -> None:
        per_worker = self.connections // self.processes + (index < self.connections % self.processes)
        ours, theirs = zip(*(socket.socketpair() for _ in range(1 + per_worker)), strict=True)
        fds = [s.fileno() for s in theirs]
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    __name__,
                    str(index),
                    str(fds[0]),
                    ",".join(map(str, fds[1:])),
                    ",".join(map(str, spool_fds)),
                ],
                pass_fds=[*fds, *spool_fds],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        finally:
            for s in theirs:
                s.close()
        conns = [Connection(s.detach()) for s in ours]
        worker = Worker(process, conns[0])
        share = self.setup.rate_per_second / self.processes
        conns[0].send(WorkerSetup(self.setup.notices, self.setup.smtp, self.setup.outbox, share))
        self.workers.append(worker)
        for i, conn in enumerate(conns[1:]):
            slot = Slot(f"{index}.{i}", conn, worker)
            self._reports.register(conn, selectors.EVENT_READ, slot)
            self.slots.append(slot)

    def render(
        self, items: Iterable[tuple[int, NoticeFacts]], now: Any, campaign: CampaignFacts
    ) -> dict[int, Location | Unbuildable]:
        """Render every item (the preflight); returns where each notice is in the spool (or why it cannot be built).

        Chunks go to the least busy worker, at most ``RENDER_AHEAD`` queued each.
        The first failure raises ``DeliveryError`` naming template and customer.
        """
        self._forget_queued()
        items = iter(items)
        index: dict[int, Location | Unbuildable] = {}
        while chunk := list(islice(items, RENDER_CHUNK)):
            self.start()
            worker = min(self.workers, key=lambda w: w.queued)
            while worker.queued >= RENDER_AHEAD:
                self._collect(index)
                worker = min(self.workers, key=lambda w: w.queued)
            worker.control.send(("render", now, campaign, chunk))
            worker.queued += 1
        while any(w.queued for w in self.workers):
            self._collect(index)
        return index

    def _forget_queued(self) -> None:
        """Drop what an aborted render left queued (its notice ids may be reused by the next one)."""
        while any(w.queued for w in self.workers):
            try:
                self._collect({})
            except DeliveryError:
                pass

    def _collect(self, index: dict[int, Location | Unbuildable]) -> None:
        busy = {w.control: w for w in self.workers if w.queued}
        for conn in wait(list(busy)):
            worker = busy[cast(Connection, conn)]  # wait() gives back what it was given, typed as any waitable
            try:
                status, result = worker.control.recv()
            except (EOFError, OSError):
                worker.queued = 0  # nothing more will come from it
                raise DeliveryError(
                    f"a notify worker stopped while rendering (exit code {worker.process.poll()}); nothing was sent"
                ) from None
            worker.queued -= 1
            if status == "failed":
                raise DeliveryError(result)
            index.update(result)

    def ready(self) -> list[Slot]:
        """Block until a slot has reported (or its worker died); those that have."""
        return [key.data for key, _ in self._reports.select()]

    def drop(self, slot: Slot) -> None:
        """A slot whose worker died: never ready again."""
        self._reports.unregister(slot.conn)

    def close(self) -> None:
        """Tell every worker to stop, and wait for them (a stuck one is killed after 30 s)."""
        for conn in [*(s.conn for s in self.slots), *(w.control for w in self.workers)]:
            try:
                _post(conn, None)
            except OSError:
                pass
        for worker in self.workers:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self._reports.close()
        for conn in [*(s.conn for s in self.slots), *(w.control for w in self.workers)]:
            conn.close()
        self.workers, self.slots = [], []


if __name__ == "__main__":
    # Through the package, not this ``__main__`` copy: what the worker pickles must name
    # ``rollout.notify.notify_workers``, which the parent can unpickle.
    from rollout.notify.notify_workers import _main as main

    main(sys.argv[1:])
