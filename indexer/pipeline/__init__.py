"""The pipeline: a block's records into a ``Batch``, enriched (DEX pools, tokens, trades), written to
the sinks with retries."""
