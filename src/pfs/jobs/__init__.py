"""Dockerized MapReduce.

- `service.Jobs`: what the HTTP API asks of jobs (specs, runs, outputs);
- `spec`: the job spec schema and the DAG order;
- `scheduler.Scheduler`: the claim loop that drives runs, one at a time;
- `execution.JobExecution`: one job of a run, its workers and its versioned output;
- `inputs`: where a job reads from (a directory, another job's output, S3; `s3input`);
- `runtime`: what starts a job's HTTP servers (docker, swarm, process).
"""
