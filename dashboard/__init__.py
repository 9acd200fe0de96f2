"""Site dashboard: MQTT ingest into SQLite and a FastAPI app with the live floor page."""
