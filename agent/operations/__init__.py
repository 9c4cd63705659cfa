"""The use cases: snapshot, list, revert, delete, recover. They speak in the project's own
types and call the adapters; no gRPC, no argparse here."""
