"""The seed guide's FastAPI streaming example (unchanged), run under
cgunicorn -k asgi, plus a route of the same shape over the test apps used to
observe disconnects."""
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from gunicorn.dirty import get_dirty_client_async

app = FastAPI()

@app.post("/chat")
async def chat(prompt: str):
    client = await get_dirty_client_async()

    async def stream():
        async for token in client.stream_async("myapp.llm:LLMApp", "generate", prompt):
            yield f"data: {token}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


@app.get("/sse")
async def sse(action: str, arg: str = ""):
    client = await get_dirty_client_async()

    async def stream():
        async for token in client.stream_async("dirty_stream_apps:StreamApp", action, arg):
            yield f"data: {token}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


@app.get("/call")
async def call(action: str):
    client = await get_dirty_client_async()
    return {"result": await client.execute_async("dirty_stream_apps:StreamApp", action)}
