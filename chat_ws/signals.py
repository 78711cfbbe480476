"""Signals chat_ws sends."""

from django.dispatch import Signal

answer_orphaned = Signal()
"""Sent (``asend``) when an answer resolves a question whose asker no longer waits anywhere,
for example because its process died. Arguments: ``question`` (Question), ``answer`` (Answer).
The answer is not lost: a receiver (such as a conversation runner) can continue from it."""

store_recovered = Signal()
"""Sent (``asend``) when the store answers again after an outage or lost this process's records,
after chat_ws has registered this process's sockets again. Argument: ``restored`` (how many
sockets were registered again). A notification only: chat_ws does not use its receivers' results."""
