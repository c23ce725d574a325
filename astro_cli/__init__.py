"""The `astro` command line: runs services and is a gRPC client for everything else."""
