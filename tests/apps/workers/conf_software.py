# Hides the version from the environ and names the Server header.
import gunicorn

gunicorn.SERVER_SOFTWARE = "hidden/1"
gunicorn.SERVER = "edge"
