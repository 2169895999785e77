def pre_fork(server):
    pass
