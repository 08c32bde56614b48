"""Process model: gunicorn master, uvicorn workers that drain instead of dropping streams."""
