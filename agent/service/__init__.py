"""The gRPC transport: servicer, identity and roles, audit, error mapping, server."""
