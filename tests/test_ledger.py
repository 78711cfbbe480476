"""The chaos ledger (loadtest.ledger): each violation kind found in synthetic records."""

from __future__ import annotations

from loadtest.ledger import (
    Asked,
    Cleared,
    Drop,
    Faults,
    InterviewRecord,
    KeyInfo,
    Ledger,
    Row,
    Sent,
    ServerSide,
    Told,
    check,
    classify_key,
    render,
)

SCRIPT = ["products", "steps", "goal"]
PREFIX = "chaos_run1"
T0 = 1_800_000_000.0


def answered(cid: str, qids: list[str] = SCRIPT, *, start: float = T0) -> InterviewRecord:
    """A clean interview: each question asked once, answered, confirmed; load-table received."""
    record = InterviewRecord(client_id=cid, started=start, end="finished", left=True)
    t = start
    for qid in qids:
        pk = f"promise-{cid}-{qid}"
        record.asked.append(Asked(t + 0.1, qid, pk))
        record.sent.append(Sent(t + 0.2, qid, pk, f"{cid}/{qid}"))
        record.cleared.append(Cleared(t + 0.3, pk))
        t += 1
    record.finished = t
    return record


def saved(record: InterviewRecord, *, finished: bool = True) -> Row:
    """The row the server should hold for the record."""
    answers = [{"id": s.qid, "question": f"text of {s.qid}", "answer": s.text} for s in record.sent]
    return Row(record.client_id, answers, finished)


def ledger_of(records: list[InterviewRecord], side: ServerSide | None = None) -> Ledger:
    side = side if side is not None else ServerSide(rows={r.client_id: saved(r) for r in records})
    return check(records, side, SCRIPT, PREFIX, Faults())


def only(ledger: Ledger, kind: str, count: int = 1) -> None:
    assert ledger.violations[kind] == count, render(ledger)
    assert sum(ledger.violations.values()) == count, render(ledger)


def test_a_clean_run_has_no_violation() -> None:
    records = [answered("c-1-1"), answered("c-2-1")]
    ledger = ledger_of(records)
    assert ledger.ok, render(ledger)
    assert ledger.stats["interviews_finished"] == 2
    assert ledger.stats["questions_asked"] == ledger.stats["questions_answered"] == 6


def test_a_confirmed_answer_asked_again_with_a_new_p_key() -> None:
    record = answered("c-1-1")
    record.asked.append(Asked(T0 + 0.5, "products", "promise-new"))  # after the confirmation at +0.3
    ledger = ledger_of([record])
    only(ledger, "a")
    assert "products" in ledger.examples["a"][0].detail and "promise-new" in ledger.examples["a"][0].detail


def test_a_second_p_key_without_a_confirmed_answer_is_b_not_a() -> None:
    record = answered("c-1-1")
    # steps asked twice before any answer was confirmed: the second p-key replaced the first
    record.asked.insert(1, Asked(T0 + 1.05, "steps", "promise-first"))
    ledger = ledger_of([record])
    only(ledger, "b")


def test_an_answer_sent_but_never_confirmed_then_asked_again_is_b() -> None:
    record = answered("c-1-1")
    row = saved(record)
    record.sent.insert(0, Sent(T0 + 0.05, "products", "promise-lost", "c-1-1/products"))
    record.asked.insert(0, Asked(T0 + 0.01, "products", "promise-lost"))
    ledger = ledger_of([record], ServerSide(rows={"c-1-1": row}))
    only(ledger, "b")


def test_a_re_sent_question_with_its_own_p_key_is_no_violation() -> None:
    record = answered("c-1-1")
    record.asked.insert(1, Asked(T0 + 0.15, "products", "promise-c-1-1-products"))
    ledger = ledger_of([record])
    assert ledger.ok, render(ledger)
    assert ledger.stats["resends"] == 1


def test_an_answer_recorded_twice() -> None:
    record = answered("c-1-1")
    row = saved(record)
    row.answers.insert(1, dict(row.answers[0]))
    ledger = ledger_of([record], ServerSide(rows={"c-1-1": row}))
    assert ledger.violations["c"] == 1 and ledger.violations["d"] == 1, render(ledger)
    assert "products recorded twice" in ledger.examples["c"][0].detail


def test_answers_recorded_out_of_order() -> None:
    record = answered("c-1-1")
    row = saved(record)
    row.answers[0], row.answers[1] = row.answers[1], row.answers[0]
    ledger = ledger_of([record], ServerSide(rows={"c-1-1": row}))
    assert ledger.violations["c"] == 2  # both swapped positions
    assert ledger.violations["d"] == 1  # and the interview does not count as finished


def test_a_saved_answer_that_differs_from_the_client_s() -> None:
    record = answered("c-1-1")
    row = saved(record)
    row.answers[2]["answer"] = "c-1-1/steps"
    ledger = ledger_of([record], ServerSide(rows={"c-1-1": row}))
    assert ledger.violations["c"] == 1 and ledger.violations["d"] == 1
    assert "goal" in ledger.examples["c"][0].detail


def test_an_interview_neither_finished_nor_told() -> None:
    record = answered("c-1-1", SCRIPT[:2])
    record.finished, record.end = None, "stalled"
    ledger = ledger_of([record], ServerSide(rows={"c-1-1": saved(record, finished=False)}))
    only(ledger, "d")


def test_an_interview_ended_by_a_named_outcome_is_no_violation() -> None:
    record = answered("c-1-1", SCRIPT[:1])
    record.finished, record.end = None, "told"
    record.told.append(Told(T0 + 2, "withdrawn:cancelled", "interview restarted"))
    ledger = ledger_of([record], ServerSide(rows={"c-1-1": saved(record, finished=False)}))
    assert ledger.ok, render(ledger)
    assert ledger.stats["interviews_told"] == {"withdrawn:cancelled": 1}


def test_load_table_received_but_the_row_is_not_finished() -> None:
    record = answered("c-1-1")
    ledger = ledger_of([record], ServerSide(rows={"c-1-1": saved(record, finished=False)}))
    only(ledger, "d")
    assert "not finished" in ledger.examples["d"][0].detail


def test_leftovers_after_the_settle() -> None:
    record = answered("c-1-1")
    side = ServerSide(
        rows={"c-1-1": saved(record)},
        leaks={"uvicorn:1": {"clients": 0, "questions": 1, "open_sessions": 0}},
        health={"uvicorn:1": {"active_clients": 0, "pending_questions": 1, "grace_timers": 3}},
        keys=[
            KeyInfo(f"{PREFIX}:{{7}}:q", "hash", -1, size=1),
            KeyInfo(f"{PREFIX}:{{7}}:cq:c-1-1", "zset", 30.0, size=1, live=1),
            KeyInfo(f"{PREFIX}:{{7}}:conn:c-1-1", "hash", 60.0, size=4),
            KeyInfo(f"{PREFIX}:{{7}}:seq", "string", -1),
        ],
    )
    ledger = ledger_of([record], side)
    only(ledger, "e", 5)  # leak report, health, q, cq, open presence
    assert ledger.store["live"] == {"conn": 1, "cq": 1, "q": 1}
    assert ledger.store["kept"] == {"seq": 1}


def test_keys_that_only_await_expiry_are_counted_not_violations() -> None:
    record = answered("c-1-1")
    side = ServerSide(
        rows={"c-1-1": saved(record)},
        keys=[
            KeyInfo(f"{PREFIX}:{{7}}:cq:c-1-1", "zset", 30.0, size=1, live=0),
            KeyInfo(f"{PREFIX}:{{7}}:conn:c-1-1", "hash", 60.0, size=5, closed=True),
            KeyInfo(f"{PREFIX}:{{7}}:claim:c-1-1", "string", 86000.0),
            KeyInfo(f"{PREFIX}:layer:asgi:group:x", "zset", 100.0, size=1),
        ],
    )
    ledger = ledger_of([record], side)
    assert ledger.ok, render(ledger)
    assert ledger.store["expiring"] == {"claim": 1, "conn": 1, "cq": 1}
    assert ledger.store["kept"] == {"layer": 1}


def test_key_kinds() -> None:
    assert classify_key(KeyInfo(f"{PREFIX}:{{3}}:idx:seen", "zset", -1, size=2), PREFIX) == ("idx:seen", "live")
    assert classify_key(KeyInfo(f"{PREFIX}:lock:sweep", "string", 5.0), PREFIX) == ("lock", "expiring")
    assert classify_key(KeyInfo(f"{PREFIX}:stray", "string", -1), PREFIX) == ("stray", "other")
    # expired between the SCAN that listed it and the TYPE/TTL that looked at it
    assert classify_key(KeyInfo(f"{PREFIX}:lock:sweep", "none", -2), PREFIX) == ("lock", "gone")


def test_a_traceback_in_a_server_log() -> None:
    record = answered("c-1-1")
    side = ServerSide(
        rows={"c-1-1": saved(record)},
        tracebacks=[("server0-uvicorn-1-002.log", 120, "channels.exceptions.Disconnected (at consumers.py:9 in push)")],
    )
    ledger = ledger_of([record], side)
    only(ledger, "f")
    assert "Disconnected" in render(ledger)


def test_missing_evidence_fails_the_run() -> None:
    record = answered("c-1-1")
    record.left = False
    ledger = ledger_of([record], ServerSide(rows={"c-1-1": saved(record)}, unavailable=["Redis scan failed"]))
    only(ledger, "x", 2)


def test_recovery_time_after_a_server_drop() -> None:
    record = answered("c-1-1")
    record.drops = [
        Drop(T0 + 0.5, 1006, "server", "uvicorn:1", True, reopened=T0 + 1.0, served=T0 + 1.5),
        Drop(T0 + 2.0, 1006, "cut", "uvicorn:2", True, reopened=T0 + 2.25, served=None),
    ]
    ledger = ledger_of([record])
    assert ledger.stats["recovery_after_server_s"]["p50"] == 1.0
    assert ledger.stats["recovery_after_cut_s"]["p50"] == 0.25


def test_unreadable_rows_are_one_missing_check_not_thousands_of_violations() -> None:
    records = [answered("c-1-1"), answered("c-2-1")]
    ledger = ledger_of(records, ServerSide(rows=None, unavailable=["reading the database failed"]))
    only(ledger, "x")


def test_an_error_the_client_recovered_from_does_not_excuse_a_silent_end() -> None:
    record = answered("c-1-1", SCRIPT[:1])
    record.finished, record.end = None, "stalled"
    row = saved(record, finished=False)
    record.told.append(Told(T0 + 0.25, "error:store-unavailable", "in reply to domain-expert-says"))
    record.sent.append(Sent(T0 + 1.25, "products", "promise-c-1-1-products", "c-1-1/products"))  # sent again
    ledger = ledger_of([record], ServerSide(rows={"c-1-1": row}))
    only(ledger, "d")
    assert "told error:store-unavailable" in ledger.examples["d"][0].detail
