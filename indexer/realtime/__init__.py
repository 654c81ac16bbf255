"""Realtime sync: new heads from the node's websocket, and the follower that turns them into
``NewBlock``/``Reorg`` events on the canonical chain."""
