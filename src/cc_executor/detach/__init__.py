"""Resumable jobs: a job with `detach_timeout` outlives its connection and can be re-attached.

    spool     one job's output kept for replay: memory, then an unlinked file (no I/O but files)
    relay     a job's output on its way to the connection holding it; pauses a full detached job
    book      resumable jobs by id: tokens, and when each is given up
    resumer   enrol, detach, attach, give up: the job manager's one entry point here

Imports `protocol` only (for the frames it sends); never the job manager or the server.
"""

from .book import ResumeBook
from .relay import Relay
from .resumer import Resumer
from .spool import Record, Spool

__all__ = ["Record", "Relay", "ResumeBook", "Resumer", "Spool"]
