workers = "four"
