"""The chain side, bottom to top: ``chain`` (JSON-RPC client, extraction of a block into records),
``pipeline`` (a block's records through enrichment into the sinks), then ``realtime`` (the head
follower) and ``backfill`` (confirmed history in parallel chunks) beside each other."""
