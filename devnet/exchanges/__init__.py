"""Local exchange servers for the CEX tests, the bench and the demo (here, not under tests/: the demo runs
them): each speaks one exchange's subscribe protocol and plays back recorded real frames from
``../shared/fixtures/cex/`` (or frames built from the exchange's documentation where the recordings
predate the current API), with injected faults."""
