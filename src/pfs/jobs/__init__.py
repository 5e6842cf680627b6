"""Dockerized MapReduce: job specs, runtimes that start job servers, and the scheduler
that runs the job DAG on a commit and versions the outputs."""
