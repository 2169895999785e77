# A typical FastAPI deployment's gunicorn.conf.py, unchanged.
workers = 1
worker_class = "uvicorn.workers.UvicornWorker"
keepalive = 5
