"""The seed guide's Flask streaming example and image "Usage" example, run
under cgunicorn (tests/integration/test_dirty_streaming.py), plus two routes
of the same shape used to observe relaying and disconnects.

The guide's example uses `request` without importing it; the import line
below adds it (the only change to the example's code).
"""
from flask import Flask, Response, request, stream_with_context
from gunicorn.dirty import get_dirty_client

app = Flask(__name__)


# --- the seed guide's "Flask Example" ---------------------------------------

@app.route("/chat", methods=["POST"])
def chat():
    prompt = request.json.get("prompt")
    client = get_dirty_client()

    def stream():
        for token in client.stream("myapp.llm:LLMApp", "generate", prompt):
            yield f"data: {token}\n\n"

    return Response(stream(), content_type="text/event-stream")


# --- the seed guide's image "Usage" example ----------------------------------

def save_thumbnail(thumbnail):
    return Response(thumbnail, content_type="image/jpeg")


@app.route("/upload", methods=["POST"])
def upload_image():
    client = get_dirty_client()

    # Create thumbnail in dirty worker
    thumbnail = client.execute(
        "myapp.images:ImageApp",
        "thumbnail",
        request.files['image'].read(),
        size=256
    )
    return save_thumbnail(thumbnail)


@app.route("/resize", methods=["POST"])
def resize():
    out = get_dirty_client().execute("myapp.images:ImageApp", "resize", request.get_data(),
                                     int(request.args["w"]), int(request.args["h"]))
    return Response(out, content_type="image/png")


# --- stream_with_context + SSE over the test apps ----------------------------

STREAM = "dirty_stream_apps:StreamApp"


@app.route("/sse")
def sse():
    """Server-Sent Events from StreamApp.<action>(*args) with the request
    context kept alive while streaming (flask.stream_with_context)."""
    action = request.args["action"]
    args = request.args.getlist("arg")
    client = get_dirty_client()

    @stream_with_context
    def events():
        for i, token in enumerate(client.stream(STREAM, action, *args)):
            yield "id: %d\ndata: %s\n\n" % (i, token)
        yield "event: end\ndata: %s\n\n" % request.args.get("tag", "done")

    return Response(events(), content_type="text/event-stream")


@app.route("/call")
def call():
    r = get_dirty_client().execute(STREAM, request.args["action"], *request.args.getlist("arg"))
    return {"result": r}
