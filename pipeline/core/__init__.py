"""What every stage shares: the stage contract, errors, the CLI wrapper, progress,
the process world (mpi4py / Horovod)."""
