"""User metrics summed across workers: `from cgunicorn import metrics`.

    from cgunicorn import metrics
    HITS = metrics.counter("app_hits_total", "Pages served", ["page"])
    HITS.labels(page="/").inc()
    QUEUE = metrics.gauge("app_queue", "Jobs waiting")
    QUEUE.set(3)
    LAT = metrics.histogram("app_work_seconds", "Work time")
    with LAT.time():
        ...

Values live in the server's shared metrics region (metrics_bind must be
set; otherwise every call is a no-op): each worker adds into its own slot
and the master sums every worker when /metrics is scraped. Counters and
histograms of a worker that exits are kept; a gauge is the sum of the
live workers' values. Values are kept with six decimals. The region holds
a fixed number of series cells (a histogram takes 17); a series that
does not fit is dropped, with one warning in the error log per process.
"""
import re
import time

import _cgunicorn

__all__ = ["counter", "gauge", "histogram", "Counter", "Gauge", "Histogram"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ADD, _SET, _OBSERVE = 0, 1, 2


def _escape(v):
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Child:
    __slots__ = ("_idx",)

    def __init__(self, idx):
        self._idx = idx

    def _update(self, op, value):
        if self._idx >= 0:
            _cgunicorn.metric_update(op, self._idx, value)


class _CounterChild(_Child):
    __slots__ = ()

    def inc(self, amount=1):
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self._update(_ADD, amount)


class _GaugeChild(_Child):
    __slots__ = ()

    def inc(self, amount=1):
        self._update(_ADD, amount)

    def dec(self, amount=1):
        self._update(_ADD, -amount)

    def set(self, value):
        self._update(_SET, value)


class _Timer:
    def __init__(self, child):
        self._child = child

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._child.observe(time.perf_counter() - self._t0)


class _HistogramChild(_Child):
    __slots__ = ()

    def observe(self, amount):
        self._update(_OBSERVE, amount)

    def time(self):
        return _Timer(self)


class _Metric:
    _kind = ""
    _child_type = _Child

    def __init__(self, name, documentation="", labelnames=()):
        if not _NAME.match(name):
            raise ValueError("invalid metric name %r" % (name,))
        labelnames = tuple(labelnames)
        for n in labelnames:
            if not _LABEL.match(n) or n == "le" or n.startswith("__"):
                raise ValueError("invalid label name %r" % (n,))
        self._name = name
        self._doc = documentation.replace("\n", " ")
        self._labelnames = labelnames
        self._children = {}
        self._self = None if labelnames else self._child(())

    def _child(self, values):
        labels = ",".join('%s="%s"' % (n, _escape(v)) for n, v in zip(self._labelnames, values))
        idx = _cgunicorn.metric_register(self._kind, self._name, labels, self._doc)
        return self._child_type(idx)

    def labels(self, *values, **kw):
        if not self._labelnames:
            raise ValueError("%s has no labels" % self._name)
        if values and kw:
            raise ValueError("pass label values by position or by name, not both")
        if kw:
            if set(kw) != set(self._labelnames):
                raise ValueError("expected labels %s" % (self._labelnames,))
            values = tuple(kw[n] for n in self._labelnames)
        if len(values) != len(self._labelnames):
            raise ValueError("expected %d label values" % len(self._labelnames))
        values = tuple(str(v) for v in values)
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._child(values)
        return child

    def _unlabelled(self):
        if self._self is None:
            raise ValueError("%s has labels: call .labels(...) first" % self._name)
        return self._self


class Counter(_Metric):
    _kind = "c"
    _child_type = _CounterChild

    def inc(self, amount=1):
        self._unlabelled().inc(amount)


class Gauge(_Metric):
    _kind = "g"
    _child_type = _GaugeChild

    def inc(self, amount=1):
        self._unlabelled().inc(amount)

    def dec(self, amount=1):
        self._unlabelled().dec(amount)

    def set(self, value):
        self._unlabelled().set(value)


class Histogram(_Metric):
    """Buckets are the server's: 0.001 0.0025 0.005 0.01 0.025 0.05 0.1
    0.25 0.5 1 2.5 5 10 30 seconds and +Inf."""
    _kind = "h"
    _child_type = _HistogramChild

    def observe(self, amount):
        self._unlabelled().observe(amount)

    def time(self):
        return self._unlabelled().time()


def counter(name, documentation="", labelnames=()):
    return Counter(name, documentation, labelnames)


def gauge(name, documentation="", labelnames=()):
    return Gauge(name, documentation, labelnames)


def histogram(name, documentation="", labelnames=()):
    return Histogram(name, documentation, labelnames)
