"""The trainer process: runs one training stage (astro_core.training) with gRPC clients for
the registry, generator and verifier, and reports progress to Redis. Not a service: a local
process (`astro train ...`) or a Kubernetes Job that receives a TrainJobSpec."""
