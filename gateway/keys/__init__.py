"""Keys and teams in the database: stored as digests, held in memory, refreshed by notification."""
