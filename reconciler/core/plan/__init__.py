"""The plan: (sites, heads, observed Deployments) into verdicts, the image gate, fallback (pure)."""
