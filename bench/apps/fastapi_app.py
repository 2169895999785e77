"""FastAPI JSON endpoint for the benchmark."""
from fastapi import FastAPI

app = FastAPI()


@app.get("/json")
async def json_hello():
    return {"message": "Hello, World!", "items": [1, 2, 3]}
