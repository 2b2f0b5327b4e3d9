"""Benchmarks of IdentityMiddleware: HTTP throughput under wrk and in-process cost per request."""
