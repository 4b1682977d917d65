"""The runner process itself: its exit statuses, and how it keeps what is its own (memory,
credentials, private directories) from the jobs it runs."""
