"""The ASGI entrypoint gunicorn loads: settings from env and the settings file, read once."""

from rillet_runtime.app import create_app
from rillet_runtime.settings import Settings

app = create_app(Settings())
