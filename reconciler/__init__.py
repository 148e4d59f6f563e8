"""reconciler: keeps every site's Deployment on the image built from its GitHub branch head."""

__version__ = "0.1.0"
