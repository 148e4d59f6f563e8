"""sites.toml: its text parsed and validated into frozen values (pure)."""
