"""HTTP API: the native SSE chat API, the OpenAI-compatible API, and operations routes."""
