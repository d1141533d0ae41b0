"""dask-deploy batch-system backends: SLURM, PBS, SGE, LSF, HTCondor, with job arrays"""
