/* Worker class name -> loop (see cg_worker_class.h). */
#include <stddef.h>
#include <string.h>

#include "cg_worker.h"
#include "cg_worker_asgi.h"
#include "cg_worker_class.h"
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
} entries[] = {
    { "sync", run_sync },
    { "gthread", cg_worker_gthread_run },
    { "asgi", cg_worker_asgi_run },
};

cg_worker_class_run_fn cg_worker_class_entry(const char *name)
{
    for (size_t i = 0; name != NULL && i < sizeof(entries) / sizeof(entries[0]); i++) {
        if (strcmp(entries[i].name, name) == 0) {
            return entries[i].run;
        }
    }
    return NULL;
}
