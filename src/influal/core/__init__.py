"""Core utilities: errors, atomic files, seeding, registries, batching, small torch helpers, statistics.

Nothing here knows about tasks, strategies or the influence engine; everything else may import it.
"""
