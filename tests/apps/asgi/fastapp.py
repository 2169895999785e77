"""An unmodified-style FastAPI application for the asgi worker tests:
path/query parameters, pydantic validation (422), form file upload,
StreamingResponse, background tasks, lifespan state, dependency injection,
WebSocket echo and broadcast."""
import asyncio
import contextlib
import os

from fastapi import BackgroundTasks, Depends, FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi import WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

EVENTS = []


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"db": "connected", "pid": os.getpid()}


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def common(q: str | None = None, limit: int = 10):
    return {"q": q, "limit": limit}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "total": item.price * 2, "tags": item.tags}


@app.get("/deps")
async def deps(params: dict = Depends(common)):
    return params


@app.post("/upload")
async def upload(file: UploadFile = File(...), note: str = Form("")):
    data = await file.read()
    return {"filename": file.filename, "size": len(data), "note": note,
            "sum": sum(data) % 65536}


@app.get("/stream")
async def stream():
    async def gen():
        for i in range(10):
            yield ("line %d\n" % i).encode()
            await asyncio.sleep(0)
    return StreamingResponse(gen(), media_type="text/plain")


def record(value):
    EVENTS.append(value)


@app.post("/background/{value}")
async def background(value: str, tasks: BackgroundTasks):
    tasks.add_task(record, value)
    return {"queued": value}


@app.get("/events")
async def events():
    return {"events": EVENTS}


@app.get("/state")
async def state(request: Request):
    return {"db": request.state.db, "pid": request.state.pid}


@app.get("/sync-route")
def sync_route():
    return PlainTextResponse("from a thread")


@app.websocket("/ws/echo")
async def ws_echo(ws: WebSocket):
    await ws.accept()
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                await ws.send_text("echo:" + msg["text"])
            else:
                await ws.send_bytes(msg["bytes"])
    except WebSocketDisconnect:
        return


CLIENTS = set()


@app.websocket("/ws/chat")
async def ws_chat(ws: WebSocket):
    await ws.accept()
    CLIENTS.add(ws)
    try:
        while True:
            text = await ws.receive_text()
            for c in list(CLIENTS):
                await c.send_text(text)
    except WebSocketDisconnect:
        pass
    finally:
        CLIENTS.discard(ws)
