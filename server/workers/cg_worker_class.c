/* Worker class name -> loop (see cg_worker_class.h). */
#include <stddef.h>
#include <string.h>

#include "cg_worker.h"
#include "cg_worker_asgi.h"
#include "cg_worker_class.h"
#include "cg_worker_gevent.h"
#include "cg_worker_gthread.h"

/* The sync loop returns nothing: it exits 0 when it stops. */
static int run_sync(struct cg_worker *w)
{
    cg_worker_sync_run(w);
    return 0;
}

static const struct {
    const char *name;
    cg_worker_class_run_fn run;
    cg_worker_class_run_fn prepare; /* before the app is loaded, or NULL */
} entries[] = {
    { "sync", run_sync, NULL },
    { "gthread", cg_worker_gthread_run, NULL },
    { "asgi", cg_worker_asgi_run, NULL },
    { "gevent", cg_worker_gevent_run, cg_worker_gevent_prepare },
};

static size_t find(const char *name)
{
    size_t i = 0;
    while (name != NULL && i < sizeof(entries) / sizeof(entries[0]) &&
           strcmp(entries[i].name, name) != 0) {
        i++;
    }
    return name != NULL ? i : sizeof(entries) / sizeof(entries[0]);
}

cg_worker_class_run_fn cg_worker_class_entry(const char *name)
{
    size_t i = find(name);
    return i < sizeof(entries) / sizeof(entries[0]) ? entries[i].run : NULL;
}

cg_worker_class_run_fn cg_worker_class_prepare(const char *name)
{
    size_t i = find(name);
    return i < sizeof(entries) / sizeof(entries[0]) ? entries[i].prepare : NULL;
}
