# Metrics sent from a hook through the server's logger, as gunicorn's statsd
# logger takes them: extra={"metric", "value", "mtype"} on info/debug/log,
# and its gauge/increment/decrement/timer/histogram methods.


def when_ready(server):
    server.log.info("", extra={"metric": "custom.ready", "value": 1, "mtype": "gauge"})
    server.log.debug("with text", extra={"metric": "custom.dbg", "value": 2,
                                         "mtype": "counter"})
    server.log.increment("custom.inc", 3)
    server.log.decrement("custom.dec", 4)
    server.log.histogram("custom.hist", 5)
    server.log.timer("custom.timer", 6.5)
    server.log.warning("a warning from when_ready")
