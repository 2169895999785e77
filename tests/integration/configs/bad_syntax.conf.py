workers = 2
bind = [
