"""Wikipedia dumps -> clean documents -> sentence shards; dump download, mirrors
and the cron refresh of corpus versions."""
