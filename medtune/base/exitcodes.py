"""Exit codes of a training run that launchers and Slurm scripts act on."""

OK = 0
PREEMPTED = 75
"""SIGTERM/SIGUSR1 arrived: a checkpoint of the step in progress was written.
Requeue and resume (sysexits' EX_TEMPFAIL: try again later)."""
BAD_LOSS = 65
"""Too many non-finite steps in a row: stopped with a checkpoint of the last
good weights (sysexits' EX_DATAERR)."""
IO_ERROR = 74
"""A checkpoint could not be written (a full disk, an I/O error): the previous
checkpoint is intact; make room and run the same command (sysexits' EX_IOERR)."""
USAGE = 2
"""A bad recipe or command line: nothing was started."""
