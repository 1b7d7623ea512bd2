"""Postgres: migrations, the queue and the repositories. All of depthmill's SQL lives here."""
