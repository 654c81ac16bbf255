"""Centralised exchanges (to come): one module per exchange, the shared order book, exchange messages
mapped to ``records``. Imports nothing of the chain side (``indexer``, ``protocols``, ``decoders``)."""
