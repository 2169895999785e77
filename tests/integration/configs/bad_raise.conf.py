workers = 2
raise RuntimeError("boom from config")
