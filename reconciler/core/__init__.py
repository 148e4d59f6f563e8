"""The pure core: model, config, planning and the engine; no I/O, imports nothing above it."""
