"""What the tests and the benchmarks share: sample media, scratch Postgres databases, a running
system, fault helpers, the node-loss scenarios, an S3 server, a clamd and a webhook receiver.
Development only: nothing in depthmill itself imports it."""
