/* The worker class table: one row per native worker class cgunicorn
 * serves, with the names that select it (gunicorn's short name and the
 * import paths configurations use, e.g. uvicorn.workers.UvicornWorker) and
 * its traits. Config validation (worker_class), the documentation of
 * worker_class in docs/settings.md and the server's dispatch all read it;
 * the server maps each row's name to its loop (server/workers/cg_worker_class.c),
 * and a unit test checks that mapping covers every row. Plain data: no
 * Python, no server code. */
#ifndef CG_CONF_WORKER_CLASS_H
#define CG_CONF_WORKER_CLASS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct cg_conf_worker_class {
    const char *name;        /* "sync": what conf->worker_class holds once resolved */
    const char *aliases[5];  /* other names that select it (import paths); NULL-ended */
    const char *with_threads; /* served as this class when threads > 1, or NULL
                                 (gunicorn's rule: sync with threads > 1 is gthread) */
    bool keeps_alive;        /* serves more than one request per connection */
    bool threads;            /* runs requests on a pool of `threads` Python threads */
    bool asgi;               /* serves ASGI applications (else WSGI) */
    bool multithread;        /* WSGI: environ["wsgi.multithread"] */
    const char *requires;    /* a Python package the class needs (checked at start-up, with
                                the pip command in the message), or NULL */
    const char *help;        /* one line for docs/settings.md */
};

extern const struct cg_conf_worker_class cg_conf_worker_classes[];
extern const size_t cg_conf_worker_classes_count;

/* The row whose name or one of whose aliases is `name`, or NULL (an import
 * path the table does not list, resolved by importing it). */
const struct cg_conf_worker_class *cg_conf_worker_class_find(const char *name);

/* The row whose name (not alias) is `name`, or NULL. */
const struct cg_conf_worker_class *cg_conf_worker_class_named(const char *name);

/* Writes the table as docs/settings.md shows it under worker_class. */
void cg_conf_worker_class_print_doc(FILE *out);

#endif
