"""Historical sync: confirmed blocks in parallel chunks, resumable (plan, load control, storage of
chunks and checkpoints, progress, and the job that ties them together)."""
