"""One adapter module per third-party client, each mapping its errors into core.errors."""
