"""gRPC services: thin servers over astro_core, and clients implementing its Protocols."""
