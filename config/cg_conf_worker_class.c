/* The worker class table (see cg_conf_worker_class.h). */
#include <string.h>

#include "cg_conf_worker_class.h"

const struct cg_conf_worker_class cg_conf_worker_classes[] = {
    { .name = "sync",
      .aliases = { "gunicorn.workers.sync.SyncWorker" },
      .with_threads = "gthread",
      .keeps_alive = false, .threads = false, .asgi = false, .multithread = false,
      .help = "one request at a time per process; closes the connection after each response" },
    { .name = "gthread",
      .aliases = { "gunicorn.workers.gthread.ThreadWorker" },
      .keeps_alive = true, .threads = true, .asgi = false, .multithread = true,
      .help = "an event loop parks kept-alive connections; `threads` Python threads run "
              "the requests" },
    { .name = "asgi",
      .aliases = { "gunicorn.workers.gasgi.ASGIWorker", "uvicorn.workers.UvicornWorker",
                   "uvicorn_worker.UvicornWorker" },
      .keeps_alive = true, .threads = false, .asgi = true, .multithread = true,
      .help = "an asyncio loop (uvloop when installed); HTTP, lifespan and WebSocket" },
    /* gunicorn's gevent worker sets wsgi.multithread True (AsyncWorker);
     * its gevent_wsgi and gevent_pywsgi run gevent's own WSGI server and
     * are served by this one class. */
    { .name = "gevent",
      .aliases = { "gunicorn.workers.ggevent.GeventWorker", "gevent_wsgi", "gevent_pywsgi",
                   "gunicorn.workers.ggevent.GeventPyWSGIWorker" },
      .keeps_alive = true, .threads = false, .asgi = false, .multithread = true,
      .requires = "gevent",
      .help = "greenlets on gevent's hub after monkey.patch_all(), one per connection, "
              "at most `worker_connections`; needs `pip install gevent`" },
};

const size_t cg_conf_worker_classes_count =
    sizeof(cg_conf_worker_classes) / sizeof(cg_conf_worker_classes[0]);

const struct cg_conf_worker_class *cg_conf_worker_class_named(const char *name)
{
    for (size_t i = 0; name != NULL && i < cg_conf_worker_classes_count; i++) {
        if (strcmp(cg_conf_worker_classes[i].name, name) == 0) {
            return &cg_conf_worker_classes[i];
        }
    }
    return NULL;
}

const struct cg_conf_worker_class *cg_conf_worker_class_find(const char *name)
{
    const struct cg_conf_worker_class *wc = cg_conf_worker_class_named(name);

    for (size_t i = 0; wc == NULL && name != NULL && i < cg_conf_worker_classes_count; i++) {
        const struct cg_conf_worker_class *c = &cg_conf_worker_classes[i];
        for (size_t a = 0; a < sizeof(c->aliases) / sizeof(c->aliases[0]) && c->aliases[a];
             a++) {
            if (strcmp(c->aliases[a], name) == 0) {
                wc = c;
            }
        }
    }
    return wc;
}

static const char *yes_no(bool b)
{
    return b ? "yes" : "no";
}

void cg_conf_worker_class_print_doc(FILE *out)
{
    fprintf(out, "\n| class | also selected by | protocol | keep-alive | threads | "
                 "wsgi.multithread | description |\n|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < cg_conf_worker_classes_count; i++) {
        const struct cg_conf_worker_class *c = &cg_conf_worker_classes[i];
        fprintf(out, "| `%s` | ", c->name);
        for (size_t a = 0; a < sizeof(c->aliases) / sizeof(c->aliases[0]) && c->aliases[a];
             a++) {
            fprintf(out, "%s`%s`", a > 0 ? ", " : "", c->aliases[a]);
        }
        fprintf(out, " | %s | %s | %s | %s | %s |\n", c->asgi ? "ASGI" : "WSGI",
                yes_no(c->keeps_alive), yes_no(c->threads),
                c->asgi ? "-" : yes_no(c->multithread), c->help);
    }
    for (size_t i = 0; i < cg_conf_worker_classes_count; i++) {
        const struct cg_conf_worker_class *c = &cg_conf_worker_classes[i];
        if (c->with_threads != NULL) {
            fprintf(out, "\n`%s` with `threads` > 1 is served as `%s`, as gunicorn does.", c->name,
                    c->with_threads);
        }
    }
    fprintf(out, " Any other value is an import path: a class that subclasses one of these "
                 "(for example to set `CONFIG_KWARGS`) is served by that native class; other "
                 "classes (eventlet, tornado, ...) end start-up with an error that "
                 "names the supported ones.\n");
}
