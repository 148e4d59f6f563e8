"""The triggers of serve, one module a kind: HTTP, the schedule, webhook deliveries and Pub/Sub
messages (the Pub/Sub client itself is adapters.pubsub); each hands syncs to Service.submit()."""
