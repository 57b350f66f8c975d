"""Sharded active-active replicas held by coordination.k8s.io/v1 Leases.

`ring` is pure (which shard a task is in, which live replica should own each shard, what a
replica does with each Lease it sees); `leases` is the service that renews, acquires and
releases the Leases and answers `owns(namespace)`. docs/operations.md ("Sharding") explains
the design and how to size replicas.
"""
