"""`taskfleet bench`: the seed's throughput and efficiency experiments, beside peers."""
