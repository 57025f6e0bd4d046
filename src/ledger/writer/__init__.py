"""The group-commit writer: commands arriving together are decided (`batch`,
pure) and saved (`writer`) in one transaction, with the rows written alongside
their events (`alongside`)."""

from ledger.writer.batch import Accepted, Present, Result
from ledger.writer.threaded import run_together
from ledger.writer.writer import BATCH_DEADLINE, CommandWriter

__all__ = ["BATCH_DEADLINE", "Accepted", "CommandWriter", "Present", "Result", "run_together"]
