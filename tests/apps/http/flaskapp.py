"""An ordinary Flask application (nothing server-specific in it), served
unmodified by the Flask suite."""
import hashlib
import os

from flask import (Flask, Response, abort, jsonify, redirect, request,
                   send_file, send_from_directory, stream_with_context, url_for)

app = Flask(__name__)


@app.route("/")
def index():
    return "hello from flask\n"


@app.route("/json")
def json_get():
    return jsonify(ok=True, args=request.args.to_dict(flat=False),
                   scheme=request.scheme, path=request.path,
                   script_root=request.script_root)


@app.route("/echo-json", methods=["POST", "PUT"])
def echo_json():
    data = request.get_json()
    return jsonify(method=request.method, got=data)


@app.route("/form", methods=["POST"])
def form():
    return jsonify(form=request.form.to_dict(flat=False))


@app.route("/upload", methods=["POST"])
def upload():
    out = {}
    for name, f in request.files.items():
        h = hashlib.sha256()
        size = 0
        while True:
            chunk = f.stream.read(1 << 16)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
        out[name] = {"filename": f.filename, "size": size, "sha256": h.hexdigest(),
                     "content_type": f.content_type}
    return jsonify(files=out, fields=request.form.to_dict())


@app.route("/stream")
def stream():
    n = int(request.args.get("n", "5"))

    def gen():
        for i in range(n):
            yield "line %d\n" % i
    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.route("/cookie/set")
def cookie_set():
    resp = jsonify(set=True)
    resp.set_cookie("flavour", "oatmeal", httponly=True)
    resp.set_cookie("other", "x y", path="/cookie")
    return resp


@app.route("/cookie/get")
def cookie_get():
    return jsonify(cookies=request.cookies.to_dict())


@app.route("/redirect")
def redirect_view():
    return redirect(url_for("json_get", via="redirect"))


@app.route("/forbidden")
def forbidden():
    abort(403)


@app.route("/error")
def error():
    raise ValueError("flask view failed on purpose")


@app.route("/file")
def file_view():
    return send_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "static", "hello.txt"), mimetype="text/plain")


@app.route("/download/<path:name>")
def download(name):
    return send_from_directory(os.environ["CG_FILES_DIR"], name)
