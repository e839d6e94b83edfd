"""Bulk awards: points to every member of a segment, as it was when queued, by a job."""
