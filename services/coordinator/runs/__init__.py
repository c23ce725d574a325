"""Pipeline runs on the coordinator: the Runs gRPC service, run records in Redis, the driver
that advances runs through their stages on any replica, and the stage runners.

- `store`: RunStore (records, stage records, event log, index, queue; keys `astro:run:*`).
- `service`: RunsServicer (StartRun, GetRun, ListRuns, WatchRun, CancelRun).
- `driver`: RunDriver (claims runs, heartbeats, resumes runs of dead replicas, cancels).
- `stages`, `training`, `evaluation`: what each stage does; `context`: what a runner gets.
- `world`: what StartRun checks and writes (datasets, models, the run's folder).
- `setup.add_runs`: wires it all into a coordinator; `client.RunsClient`: the gRPC client.
"""
