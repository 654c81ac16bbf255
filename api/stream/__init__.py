"""The websocket stream: protocol, hub, replay from Postgres, LISTEN/NOTIFY listener."""
