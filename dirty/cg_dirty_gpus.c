/* Device assignment for dirty workers (see cg_dirty_gpus.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cg_dirty_gpus.h"
#include "cg_supervisor.h"

void cg_dirty_gpus_free(struct cg_dirty_gpus *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->ids[i]);
    }
    free(g->ids);
    g->ids = NULL;
    g->n = 0;
}

/* Appends the `len` bytes at `id`. */
static int add_id(struct cg_dirty_gpus *g, const char *id, size_t len, struct cg_err *err)
{
    if (g->n >= CG_DIRTY_MAX_GPUS) {
        cg_err_set(err, "more than %d devices", CG_DIRTY_MAX_GPUS);
        return -1;
    }
    char **v = realloc(g->ids, (g->n + 1) * sizeof(*v));
    if (v == NULL) {
        cg_err_set(err, "out of memory");
        return -1;
    }
    g->ids = v;
    g->ids[g->n] = strndup(id, len);
    if (g->ids[g->n] == NULL) {
        cg_err_set(err, "out of memory");
        return -1;
    }
    g->n++;
    return 0;
}

int cg_dirty_gpus_parse_list(struct cg_dirty_gpus *g, const char *spec, struct cg_err *err)
{
    const char *p = spec;

    for (;;) {
        const char *end = strchr(p, ',');
        const char *stop = end != NULL ? end : p + strlen(p);
        while (p < stop && isspace((unsigned char)*p)) {
            p++;
        }
        const char *q = stop;
        while (q > p && isspace((unsigned char)q[-1])) {
            q--;
        }
        if (q == p) {
            cg_err_set(err, "dirty_gpus '%s': an empty device id; use ids such as 0,1,2,3",
                       spec);
            cg_dirty_gpus_free(g);
            return -1;
        }
        if (add_id(g, p, (size_t)(q - p), err) < 0) {
            cg_dirty_gpus_free(g);
            return -1;
        }
        if (end == NULL) {
            return 0;
        }
        p = end + 1;
    }
}

int cg_dirty_gpus_parse_smi(struct cg_dirty_gpus *g, const char *text, struct cg_err *err)
{
    const char *line = text;

    while (line != NULL && *line != '\0') {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, "GPU ", 4) == 0) {
            const char *d = line + 4, *e = d;
            while (isdigit((unsigned char)*e)) {
                e++;
            }
            if (e > d && *e == ':' && add_id(g, d, (size_t)(e - d), err) < 0) {
                cg_dirty_gpus_free(g);
                return -1;
            }
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    return 0;
}

const char *cg_dirty_gpus_for_slot(const struct cg_dirty_gpus *g, int slot)
{
    if (g->n == 0 || slot < 0) {
        return NULL;
    }
    return g->ids[(size_t)slot % g->n];
}

/* Runs `nvidia-smi -L` and returns its output (malloc'd, NUL-terminated),
 * or NULL with err. */
static char *run_smi(struct cg_err *err)
{
    int pfd[2];
    size_t len = 0, cap = 4096;
    char *out = malloc(cap);
    int status = 0;

    if (out == NULL || pipe2(pfd, O_CLOEXEC) < 0) {
        free(out);
        cg_err_set(err, "cannot run nvidia-smi: %s", strerror(errno));
        return NULL;
    }
    pid_t pid = cg_sup_fork(CG_ROLE_DIRTY_WORKER);
    if (pid < 0) {
        cg_err_set(err, "cannot run nvidia-smi: fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        free(out);
        return NULL;
    }
    if (pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDERR_FILENO);
        }
        execlp("nvidia-smi", "nvidia-smi", "-L", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    for (;;) {
        if (len + 1 >= cap) {
            char *bigger = cap < (1u << 20) ? realloc(out, cap * 2) : NULL;
            if (bigger == NULL) {
                break; /* a megabyte of device list is plenty */
            }
            out = bigger;
            cap *= 2;
        }
        ssize_t r = read(pfd[0], out + len, cap - len - 1);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        len += (size_t)r;
    }
    out[len] = '\0';
    close(pfd[0]);
    if (cg_sup_wait_one(pid, &status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
            cg_err_set(err, "nvidia-smi was not found on PATH");
        } else {
            cg_err_set(err, "nvidia-smi -L failed (wait status %d)", status);
        }
        free(out);
        return NULL;
    }
    return out;
}

int cg_dirty_gpus_resolve(struct cg_dirty_gpus *g, const char *setting, struct cg_err *err)
{
    *g = (struct cg_dirty_gpus){ 0 };
    if (setting == NULL || setting[0] == '\0') {
        return 0;
    }
    if (strcmp(setting, "auto") != 0) {
        return cg_dirty_gpus_parse_list(g, setting, err);
    }
    char *out = run_smi(err);
    if (out == NULL) {
        return -1;
    }
    int rc = cg_dirty_gpus_parse_smi(g, out, err);
    free(out);
    if (rc == 0 && g->n == 0) {
        cg_err_set(err, "nvidia-smi -L listed no GPU");
        rc = -1;
    }
    return rc;
}
