def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


app = application


def create_app(name="x", debug=False):
    return application
