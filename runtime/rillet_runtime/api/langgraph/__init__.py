"""LangGraph's Agent Server API (what `langgraph dev` and LangGraph Platform serve), on
Rillet's runs, threads, checkpoints, limits and principals, so `langgraph-sdk`,
`RemoteGraph` and LangGraph's UIs work against a ChatService unchanged."""

from fastapi import APIRouter

from rillet_runtime.api.langgraph import assistants, runs, threads

router = APIRouter()
router.include_router(assistants.router)
router.include_router(threads.router)
router.include_router(runs.router)

__all__ = ["router"]
