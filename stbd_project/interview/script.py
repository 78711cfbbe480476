"""The interviewer's questions: a short process interview about a manufacturing business."""

QUESTIONS: list[tuple[str, str]] = [
    ("products", "What products do you make, and roughly how many kinds?"),
    ("steps", "Walk me through the main production steps, from raw material to shipped product."),
    ("bottleneck", "Which step or machine limits how much you can make in a week?"),
    ("orders", "How do orders arrive, and how far ahead do you know what you must make?"),
    ("changeover", "What does it cost you, in time, to switch a line from one product to another?"),
    ("goal", "If a new schedule could improve one thing, what should it be?"),
]

INTRO = "Hi! I will ask you a few questions about how you make things, to start a scheduling model."
OUTRO = "Thank you! Here is a summary of what you told me."
RESTARTED = "We were disconnected, so let's start again."
RESUMED = "We were disconnected, so let's pick up where we left off."


def summary_table(answers: list[dict[str, str]]) -> dict[str, object]:
    """The summary sent with load-table at the end of an interview."""
    return {
        "table-headings": [
            {"title": "Topic", "key": "topic"},
            {"title": "Question", "key": "question"},
            {"title": "Your answer", "key": "answer"},
        ],
        "table-body": [
            {"topic": a["id"], "question": a["question"], "answer": a["answer"]} for a in answers
        ],
    }
