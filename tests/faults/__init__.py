"""The fault suite: bad input, killed and paused processes, duplicates, lost networks."""
