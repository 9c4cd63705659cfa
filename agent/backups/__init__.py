"""Backups of snapshots to secondary storage: the stream a backup holds, the targets it goes
to and what a target says it holds."""
