"""What a write use case returns, in every domain."""
from dataclasses import dataclass


@dataclass
class Outcome:
    """The use case's record, the member after it (when it touched one), and whether it is a replay
    of an earlier request (the views then answer with the first answer and `Idempotent-Replayed`)."""

    record: object
    member: object = None
    replayed: bool = False
