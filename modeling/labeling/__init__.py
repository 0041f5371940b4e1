"""The teacher run once over records, its outputs cached for the student."""
