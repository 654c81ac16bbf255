"""The node: the JSON-RPC client (batches, retries, error mapping) and the extraction of a block with
its receipts into records."""
