workers = 6
timeout = "45"
bind = "127.0.0.1:9003"
