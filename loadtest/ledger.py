"""The chaos run's ledger: what the clients saw against what the server kept, and the violations.

Pure: no sockets, processes or Django. ``chaos`` fills an :class:`InterviewRecord` per client-id
and a :class:`ServerSide` after the settle; :func:`check` turns them into a :class:`Ledger`
(violations by kind, with examples, and the run's figures); :func:`render` prints it.

Violation kinds (each counted on its own row):

- ``a``: a question answered (the answer's p-key confirmed by ``clear-promise-keys``) and later
  asked again with a different p-key;
- ``b``: a question asked with more than one p-key in one interview, no answer confirmed before
  the new p-key came (disjoint from ``a``);
- ``c``: an answer saved twice, out of the script's order, with a text other than the client's,
  or one the client never sent;
- ``d``: an interview neither finished with every answer saved in order nor ended with a named
  outcome the client was told (a withdrawn question, an ``error`` reply, a close code);
- ``e``: anything left of the run's clients after the settle (leak report, health counts, live
  store keys);
- ``f``: a ``Traceback`` in a server log;
- ``x``: a check that could not be made (the evidence is missing, so the run cannot pass).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtest.report import percentile

KINDS = {
    "a": "answer confirmed, then asked again with a new p-key",
    "b": "asked with a second p-key (no answer confirmed before)",
    "c": "answer saved twice, out of order or not as sent",
    "d": "interview neither finished nor ended with a named outcome",
    "e": "left of the run's clients after the settle",
    "f": "traceback in a server log",
    "x": "check could not be made",
}
MAX_EXAMPLES = 5  # examples kept per violation kind
LEAVE_CODE = 4002  # the server forgot the client (close-channel)
# Health counts that must be 0 once every client left (store-wide, then this process's own).
HEALTH_ZERO = (
    "active_clients", "disconnected_clients", "ping_records", "pending_questions",
    "local_sockets", "waiting_askers", "handler_tasks",
)  # fmt: skip


# ---------------------------------------------------------------------- client side
@dataclass
class Asked:
    """A question received: iviewr-says with a p-key."""

    t: float  # unix seconds
    qid: str  # the script's question id ("?" + text when the text is not in the script)
    p_key: str


@dataclass
class Sent:
    """An answer written to a socket (domain-expert-says with one p-key)."""

    t: float
    qid: str
    p_key: str
    text: str


@dataclass
class Cleared:
    """One p-key of a clear-promise-keys; ``reason`` when the question was withdrawn unanswered."""

    t: float
    p_key: str
    reason: str | None = None


@dataclass
class Told:
    """A named outcome told to the client: ``withdrawn:<reason>``, ``error:<code>`` or ``close:<code>``."""

    t: float
    kind: str
    detail: str = ""


@dataclass
class Drop:
    """A socket lost without the client asking: cut by the tool, or by the server's side."""

    t: float
    code: int  # the close code; 1006 without a close frame
    cause: str  # "cut" (the tool aborted it) or "server"
    server: str  # the server the socket was on
    mid_interview: bool  # started and not finished when it dropped
    reopened: float | None = None  # the next socket that opened
    served: float | None = None  # then the next question received or the interview finished


@dataclass
class InterviewRecord:
    """Everything one client-id saw, from start-conversation to its close-channel."""

    client_id: str
    started: float
    asked: list[Asked] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    cleared: list[Cleared] = field(default_factory=list)
    told: list[Told] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    finished: float | None = None  # load-table received
    end: str = ""  # finished, told, stalled, unfinished (settle over), failed (the client broke)
    end_detail: str = ""
    left: bool = False  # close-channel answered with 4002 (or the server forgot it first)
    reconnects: int = 0  # sockets opened after a drop
    connect_failures: int = 0  # attempts that did not open


# ---------------------------------------------------------------------- server side
@dataclass
class Row:
    """One interview_interview row."""

    client_id: str
    answers: list[dict[str, Any]]
    finished: bool


@dataclass
class KeyInfo:
    """One key of the private Redis: its name, type, TTL (seconds; -1 none) and what it holds."""

    key: str
    type: str
    ttl: float
    size: int = 0  # members (hash, zset, set, list); 0 for strings
    live: int = 0  # members that are live records (questions with a record, open presence)
    closed: bool = False  # a presence hash with closed_at (in its reconnect grace)


@dataclass
class ServerSide:
    """What the servers kept, read after the settle."""

    rows: dict[str, Row] | None = field(default_factory=dict)  # client-id -> row; None: unreadable
    leaks: dict[str, dict[str, int]] = field(default_factory=dict)  # server -> /demo/leaks counts
    health: dict[str, dict[str, Any]] = field(default_factory=dict)  # server -> health report
    keys: list[KeyInfo] = field(default_factory=list)  # the private Redis's keys
    tracebacks: list[tuple[str, int, str]] = field(default_factory=list)  # (log, line, exception)
    unavailable: list[str] = field(default_factory=list)  # checks that could not be made, and why
    context: list[str] = field(default_factory=list)  # what explains a leftover (open session rows)


@dataclass
class Faults:
    """What the tool did to the system."""

    kills: list[tuple[float, str]] = field(default_factory=list)  # (t, server)
    terms: list[tuple[float, str, float, bool]] = field(default_factory=list)  # (t, server, exit s, forced)
    redis_restarts: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds down)
    cuts: list[tuple[float, int]] = field(default_factory=list)  # (t, sockets cut)
    skipped: int = 0  # faults due while every server was already down or restarting


# ---------------------------------------------------------------------- the ledger
@dataclass
class Violation:
    kind: str
    client_id: str  # "" when not about one client
    detail: str


@dataclass
class Ledger:
    violations: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    examples: dict[str, list[Violation]] = field(default_factory=lambda: {k: [] for k in KINDS})
    every: list[Violation] = field(default_factory=list)  # all of them, for the JSON report
    context: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)  # key counts by kind, live and awaiting expiry

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def add(self, kind: str, client_id: str, detail: str) -> None:
        self.violations[kind] += 1
        violation = Violation(kind, client_id, detail)
        self.every.append(violation)
        if len(self.examples[kind]) < MAX_EXAMPLES:
            self.examples[kind].append(violation)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "violations": self.violations,
            "every": [asdict(v) for v in self.every],
            "context": self.context,
            "stats": self.stats,
            "store": self.store,
        }


def clock(t: float | None) -> str:
    """A wall time as HH:MM:SS.mmm (local time, as the servers' logs write it)."""
    if t is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def confirmed_at(record: InterviewRecord) -> dict[str, float]:
    """p-key -> when an answer sent with it was confirmed (a clear-promise-keys without reason)."""
    first_sent: dict[str, float] = {}
    for s in record.sent:
        first_sent.setdefault(s.p_key, s.t)
    out: dict[str, float] = {}
    for c in record.cleared:
        if c.reason is None and c.p_key in first_sent and c.t >= first_sent[c.p_key] and c.p_key not in out:
            out[c.p_key] = c.t
    return out


def check_asked(record: InterviewRecord, ledger: Ledger) -> None:
    """Kinds a and b: a question id asked with a second p-key."""
    confirmed = confirmed_at(record)
    by_qid: dict[str, list[Asked]] = {}
    for q in record.asked:
        keys = by_qid.setdefault(q.qid, [])
        if all(k.p_key != q.p_key for k in keys):
            keys.append(q)  # first receipt of each p-key
    for qid, keys in by_qid.items():
        if len(keys) < 2:
            continue
        reasked = None
        for later in keys[1:]:
            for earlier in keys:
                at = confirmed.get(earlier.p_key)
                if earlier is not later and at is not None and at <= later.t:
                    reasked = (earlier, at, later)
                    break
            if reasked:
                break
        story = "; ".join(_history(record, k.p_key) for k in keys) + _drops(record, keys[0].t, keys[-1].t)
        if reasked is not None:
            earlier, at, later = reasked
            ledger.add(
                "a", record.client_id,
                f"{qid}: {earlier.p_key} answer confirmed {clock(at)}, asked again as "
                f"{later.p_key} at {clock(later.t)} [{story}]",
            )  # fmt: skip
        else:
            ledger.add("b", record.client_id, f"{qid}: {len(keys)} p-keys [{story}]")


def _history(record: InterviewRecord, p_key: str) -> str:
    """One p-key's life as the client saw it: asked, answered, cleared."""
    asked = [clock(q.t) for q in record.asked if q.p_key == p_key]
    sent = [clock(s.t) for s in record.sent if s.p_key == p_key]
    cleared = [clock(c.t) + (f" ({c.reason})" if c.reason else "") for c in record.cleared if c.p_key == p_key]
    return f"{p_key} asked {','.join(asked)} answered {','.join(sent) or '-'} cleared {','.join(cleared) or '-'}"


def _drops(record: InterviewRecord, since: float, until: float) -> str:
    shown = [f"{d.cause} drop {d.code} on {d.server} {clock(d.t)}" for d in record.drops if since <= d.t <= until]
    return "; " + ", ".join(shown) if shown else ""


def check_row(record: InterviewRecord | None, client_id: str, row: Row, script: Sequence[str], ledger: Ledger) -> None:
    """Kind c: the row's answers, each once, in the script's order, as the client sent them."""
    sent: dict[str, set[str]] = {}
    for s in record.sent if record is not None else ():
        sent.setdefault(s.qid, set()).add(s.text)
    seen: set[str] = set()
    for i, answer in enumerate(row.answers):
        qid, text = str(answer.get("id")), answer.get("answer")
        at = len(seen)  # a repeated answer does not move the script on
        if qid in seen:
            ledger.add("c", client_id, f"{qid} recorded twice (position {i + 1} of {len(row.answers)})")
        elif at >= len(script) or script[at] != qid:
            expected = script[at] if at < len(script) else "nothing"
            ledger.add("c", client_id, f"position {i + 1} holds {qid}, the script asks {expected} there")
        elif record is None:
            ledger.add("c", client_id, f"{qid} saved for a client-id no client used")
        elif qid not in sent:
            ledger.add("c", client_id, f"{qid} saved as {text!r}, the client never answered it")
        elif text not in sent[qid]:
            ledger.add("c", client_id, f"{qid} saved as {text!r}, the client sent {sorted(sent[qid])}")
        seen.add(qid)


def complete(record: InterviewRecord, row: Row | None, script: Sequence[str]) -> str:
    """Why a finished interview does not count as finished; "" when it does."""
    if record.finished is None:
        return "no load-table received"
    if row is None:
        return "no interview row"
    if not row.finished:
        return "the row is not finished"
    ids = [str(a.get("id")) for a in row.answers]
    if ids != list(script):
        return f"the row holds {ids}"
    sent = {(s.qid, s.text) for s in record.sent}
    if any((str(a.get("id")), a.get("answer")) not in sent for a in row.answers):
        return "the row's answers differ from the client's"
    return ""


def last_word(record: InterviewRecord) -> Told | None:
    """The named outcome the interview ended with: a withdrawn question or a close code, or an
    error after which the client was asked and answered nothing more (an error it recovered
    from, by sending its answer again, is not how the interview ended)."""
    activity = max([record.started, *(q.t for q in record.asked), *(s.t for s in record.sent)])
    for told in record.told:
        if told.kind.startswith(("withdrawn:", "close:")) or told.t >= activity:
            return told
    return None


def check_end(record: InterviewRecord, row: Row | None, script: Sequence[str], ledger: Ledger) -> str:
    """Kind d. Returns how the interview counts: finished, told or violation."""
    why = complete(record, row, script)
    if not why:
        return "finished"
    if record.finished is None and last_word(record) is not None:
        return "told"
    times = [record.started, *(q.t for q in record.asked), *(c.t for c in record.cleared), *(s.t for s in record.sent)]
    last = max(times)
    detail = f"{record.end or 'ended'}{': ' + record.end_detail if record.end_detail else ''}; {why}"
    if record.told:
        detail += "; told " + ", ".join(f"{t.kind} at {clock(t.t)}" for t in record.told[:3])
    answered = len({s.qid for s in record.sent})
    ledger.add(
        "d", record.client_id,
        f"{detail}; started {clock(record.started)}, {answered} question(s) answered, last event "
        f"{clock(last)}, {len(record.drops)} drop(s)",
    )  # fmt: skip
    return "violation"


def classify_key(key: KeyInfo, prefix: str) -> tuple[str, str]:
    """(kind, state) of one Redis key of the run: state is live, expiring (only awaits its TTL),
    kept (expected to stay: counters, the layer), gone (expired after the scan listed it) or other."""
    name = key.key
    if name.startswith(f"{prefix}:layer:"):
        return "layer", "kept"
    rest = name[len(prefix) + 1 :] if name.startswith(prefix + ":") else name
    parts = rest.split(":")
    if parts and parts[0].startswith("{") and parts[0].endswith("}"):
        parts = parts[1:]  # the bucket's hash tag
    kind = parts[0] if parts else rest
    if kind == "idx" and len(parts) > 1:
        kind = f"idx:{parts[1]}"
    if key.type == "none":
        return kind, "gone"
    if kind in ("q", "idx:q", "idx:seen", "idx:closed"):
        return kind, "live" if key.size else "kept"
    if kind == "cq":
        return kind, "live" if key.live else "expiring"
    if kind == "conn":
        return kind, "expiring" if key.closed and key.ttl > 0 else "live"
    if kind in ("seq", "val"):
        return kind, "kept"
    if key.ttl > 0:
        return kind, "expiring"
    return kind, "other"


def check_store(keys: Iterable[KeyInfo], prefix: str, ledger: Ledger) -> None:
    """Kind e for the private Redis: live questions and clients; the rest counted by kind."""
    counts: dict[str, Counter[str]] = {}
    for key in keys:
        kind, state = classify_key(key, prefix)
        counts.setdefault(state, Counter())[kind] += 1
        if state == "live":
            what = f"{key.size} member(s)" if key.type in ("hash", "zset", "set") else key.type
            if kind == "cq":
                what = f"{key.live} question(s) with a record"
            ledger.add("e", "", f"store key {key.key} ({kind}, {what}, ttl {key.ttl:g}s)")
        elif state == "other":
            ledger.add("e", "", f"store key {key.key} ({key.type}, no TTL) of no known kind")
    ledger.store = {state: dict(sorted(c.items())) for state, c in sorted(counts.items())}


def check_server(server: ServerSide, ledger: Ledger) -> None:
    """Kinds e (leak reports, health counts), f (tracebacks) and x (missing evidence)."""
    for name, leaks in sorted(server.leaks.items()):
        left = {k: v for k, v in leaks.items() if v}
        if left:
            ledger.add("e", "", f"{name} /demo/leaks: {left}")
    for name, report in sorted(server.health.items()):
        counts = {k: report.get(k) for k in HEALTH_ZERO if report.get(k)}
        if counts:
            ledger.add("e", "", f"{name} health: {counts}")
    for log, line, exc in server.tracebacks:
        ledger.add("f", "", f"{log}:{line}: {exc}")
    for why in server.unavailable:
        ledger.add("x", "", why)
    ledger.context.extend(server.context)


def series(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50": percentile(ordered, 50), "p99": percentile(ordered, 99),
            "max": ordered[-1] if ordered else math.nan}  # fmt: skip


def check(
    interviews: Sequence[InterviewRecord],
    server: ServerSide,
    script: Sequence[str],
    prefix: str,
    faults: Faults | None = None,
) -> Ledger:
    """Compare both sides; every violation is counted and the first few kept as examples."""
    ledger = Ledger()
    by_id = {r.client_id: r for r in interviews}
    ends: Counter[str] = Counter()
    told: Counter[str] = Counter()
    rows = server.rows
    for record in interviews:
        check_asked(record, ledger)
        if rows is None:  # the rows could not be read: kind x says so, c and d cannot be judged
            ends["unjudged"] += 1
            continue
        row = rows.get(record.client_id)
        if row is not None:
            check_row(record, record.client_id, row, script, ledger)
        verdict = check_end(record, row, script, ledger)
        ends[verdict] += 1
        if verdict == "told":
            first = last_word(record) or record.told[0]
            told[first.kind] += 1
            if sum(told.values()) <= MAX_EXAMPLES:
                ledger.context.append(
                    f"told {record.client_id}: {first.kind} at {clock(first.t)} ({first.detail.strip()}); "
                    f"ended {record.end} {record.end_detail}".rstrip()
                )
        if not record.left:
            ledger.add("x", record.client_id, f"the client could not leave ({record.end_detail or record.end})")
    for client_id, row in (rows or {}).items():
        if client_id not in by_id:
            check_row(None, client_id, row, script, ledger)
    check_store(server.keys, prefix, ledger)
    check_server(server, ledger)
    ledger.stats = figures(interviews, faults or Faults(), ends, told)
    return ledger


def figures(
    interviews: Sequence[InterviewRecord], faults: Faults, ends: Counter[str], told: Counter[str]
) -> dict[str, Any]:
    """The run's counts and the time clients took to be served again after a drop."""
    asked = sum(len({q.p_key for q in r.asked}) for r in interviews)
    receipts = sum(len(r.asked) for r in interviews)
    answered = sum(len(confirmed_at(r)) for r in interviews)
    recovery: dict[str, list[float]] = {"server": [], "cut": []}
    reopened: dict[str, list[float]] = {"server": [], "cut": []}
    for r in interviews:
        for d in r.drops:
            if d.reopened is None:
                continue
            back = d.served if d.mid_interview and d.served is not None else d.reopened
            recovery.setdefault(d.cause, []).append(back - d.t)
            reopened.setdefault(d.cause, []).append(d.reopened - d.t)
    terms = [seconds for _, _, seconds, _ in faults.terms]
    return {
        "kills": len(faults.kills),
        "graceful_stops": len(faults.terms),
        "graceful_exit_s": series(terms),
        "graceful_forced": sum(1 for *_, forced in faults.terms if forced),
        "redis_restarts": len(faults.redis_restarts),
        "redis_down_s": series([s for _, s in faults.redis_restarts]),
        "cuts": len(faults.cuts),
        "sockets_cut": sum(n for _, n in faults.cuts),
        "faults_skipped": faults.skipped,
        "interviews_started": len(interviews),
        "interviews_finished": ends.get("finished", 0),
        "interviews_told": dict(told),
        "interviews_violating": ends.get("violation", 0),
        "questions_asked": asked,
        "questions_answered": answered,
        "answers_sent": sum(len(r.sent) for r in interviews),
        "resends": receipts - asked,
        "reconnects": sum(r.reconnects for r in interviews),
        "connect_failures": sum(r.connect_failures for r in interviews),
        "drops": sum(len(r.drops) for r in interviews),
        "recovery_after_server_s": series(recovery["server"]),
        "recovery_after_cut_s": series(recovery["cut"]),
        "reopened_after_server_s": series(reopened["server"]),
        "reopened_after_cut_s": series(reopened["cut"]),
    }


def _seconds(s: dict[str, float]) -> str:
    if not s["n"]:
        return "-"
    return f"p50 {s['p50']:.2f}s  p99 {s['p99']:.2f}s  max {s['max']:.2f}s  (n={s['n']})"


def render(ledger: Ledger) -> str:
    """The ledger as a table: violations by kind with examples, then the run's figures."""
    st = ledger.stats
    lines = ["violations", f"  {'kind':<4} {'count':>6}  what"]
    for kind, what in KINDS.items():
        lines.append(f"  {kind:<4} {ledger.violations[kind]:>6}  {what}")
    for kind, examples in ledger.examples.items():
        for v in examples:
            who = f"{v.client_id}: " if v.client_id else ""
            lines.append(f"    ({kind}) {who}{v.detail}")
    for line in ledger.context:
        lines.append(f"    context: {line}")
    if ledger.store:
        lines.append("private Redis keys after the settle")
        for state, kinds in ledger.store.items():
            lines.append(f"  {state:<9} " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    if st:
        told = ", ".join(f"{k} {n}" for k, n in sorted(st["interviews_told"].items())) or "0"
        lines += [
            "faults",
            f"  server kills (SIGKILL)      {st['kills']}",
            f"  graceful stops (SIGTERM)    {st['graceful_stops']}; exit {_seconds(st['graceful_exit_s'])}"
            + (f"; {st['graceful_forced']} killed after the bound" if st["graceful_forced"] else ""),
            f"  Redis restarts              {st['redis_restarts']}; down {_seconds(st['redis_down_s'])}",
            f"  socket cuts                 {st['cuts']} rounds, {st['sockets_cut']} sockets",
            f"  skipped (no server up)      {st['faults_skipped']}",
            "clients",
            f"  interviews started          {st['interviews_started']}",
            f"  finished, saved in order    {st['interviews_finished']}",
            f"  ended with a named outcome  {told}",
            f"  violating (d)               {st['interviews_violating']}",
            f"  questions asked / answered  {st['questions_asked']} / {st['questions_answered']}"
            f" ({st['answers_sent']} answers sent)",
            f"  re-sends (same p-key)       {st['resends']}",
            f"  drops / reconnects          {st['drops']} / {st['reconnects']}"
            f" ({st['connect_failures']} attempts refused)",
            f"  served again after a server drop  {_seconds(st['recovery_after_server_s'])}",
            f"  served again after a cut          {_seconds(st['recovery_after_cut_s'])}",
            f"    of which a socket again         {_seconds(st['reopened_after_server_s'])} (server drop)",
            f"                                    {_seconds(st['reopened_after_cut_s'])} (cut)",
        ]
    return "\n".join(lines)
