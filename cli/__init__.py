"""The ``dexnode`` command: the one place that composes the indexer, the sinks and the devnet."""
