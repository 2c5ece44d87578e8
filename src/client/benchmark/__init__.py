"""`taskfleet bench`: throughput, efficiency, uneven work and commands, beside peers."""
