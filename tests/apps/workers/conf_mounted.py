# A project's gunicorn.conf.py naming its own Uvicorn worker subclass.
worker_class = "cgworkers.MountedWorker"
workers = 1
