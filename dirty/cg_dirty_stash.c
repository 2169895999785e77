/* The stash tables held by the dirty arbiter (see cg_dirty_stash.h). Each
 * table is a chained hash of entries keyed by the key's compact JSON form,
 * with an insertion-ordered list for keys(). */
#include <fnmatch.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg_dirty_stash.h"

struct cg_dirty_stash_entry {
    char *key;                 /* compact JSON of the key, owned */
    json_t *value;             /* owned; bytes tags refer into blob */
    unsigned char *blob;       /* owned, may be NULL */
    size_t blob_len;
    struct cg_dirty_stash_entry *hnext;       /* hash chain */
    struct cg_dirty_stash_entry *prev, *next; /* insertion order */
};

struct cg_dirty_stash_table {
    char *name;                /* owned */
    struct cg_dirty_stash_entry **buckets;
    size_t nbuckets, n;
    struct cg_dirty_stash_entry *head, *tail;
    struct cg_dirty_stash_table *next;
};

static const char *const op_names[] = { NULL,    "put",    "get",          "delete", "keys",
                                        "clear", "info",   "ensure",       "delete_table",
                                        "tables", "exists" };
enum { OP_PUT = 1, OP_GET, OP_DELETE, OP_KEYS, OP_CLEAR, OP_INFO, OP_ENSURE, OP_DELETE_TABLE,
       OP_TABLES, OP_EXISTS, OP_MAX = OP_EXISTS };

void cg_dirty_stash_init(struct cg_dirty_stash *s)
{
    s->tables = NULL;
    s->ntables = 0;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    }
    return h;
}

static void entry_free(struct cg_dirty_stash_entry *e)
{
    free(e->key);
    json_decref(e->value);
    free(e->blob);
    free(e);
}

static void table_clear(struct cg_dirty_stash_table *t)
{
    struct cg_dirty_stash_entry *e = t->head;
    while (e != NULL) {
        struct cg_dirty_stash_entry *next = e->next;
        entry_free(e);
        e = next;
    }
    t->head = t->tail = NULL;
    t->n = 0;
    memset(t->buckets, 0, t->nbuckets * sizeof(t->buckets[0]));
}

static void table_free(struct cg_dirty_stash_table *t)
{
    table_clear(t);
    free(t->buckets);
    free(t->name);
    free(t);
}

void cg_dirty_stash_deinit(struct cg_dirty_stash *s)
{
    while (s->tables != NULL) {
        struct cg_dirty_stash_table *t = s->tables;
        s->tables = t->next;
        table_free(t);
    }
    s->ntables = 0;
}

static struct cg_dirty_stash_table *table_find(struct cg_dirty_stash *s, const char *name,
                                               struct cg_dirty_stash_table ***link)
{
    struct cg_dirty_stash_table **pp = &s->tables;
    for (; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            if (link != NULL) {
                *link = pp;
            }
            return *pp;
        }
    }
    return NULL;
}

static struct cg_dirty_stash_table *table_ensure(struct cg_dirty_stash *s, const char *name)
{
    struct cg_dirty_stash_table *t = table_find(s, name, NULL);
    if (t != NULL) {
        return t;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL || (t->name = strdup(name)) == NULL ||
        (t->buckets = calloc(64, sizeof(t->buckets[0]))) == NULL) {
        if (t != NULL) {
            free(t->name);
        }
        free(t);
        return NULL;
    }
    t->nbuckets = 64;
    t->next = s->tables;
    s->tables = t;
    s->ntables++;
    return t;
}

static struct cg_dirty_stash_entry **entry_slot(struct cg_dirty_stash_table *t, const char *key)
{
    struct cg_dirty_stash_entry **pp = &t->buckets[hash_str(key) & (t->nbuckets - 1)];
    for (; *pp != NULL; pp = &(*pp)->hnext) {
        if (strcmp((*pp)->key, key) == 0) {
            break;
        }
    }
    return pp;
}

static void table_grow(struct cg_dirty_stash_table *t)
{
    size_t nb = t->nbuckets * 2;
    struct cg_dirty_stash_entry **b = calloc(nb, sizeof(*b));
    if (b == NULL) {
        return; /* longer chains, still correct */
    }
    for (struct cg_dirty_stash_entry *e = t->head; e != NULL; e = e->next) {
        size_t i = hash_str(e->key) & (nb - 1);
        e->hnext = b[i];
        b[i] = e;
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

static bool entry_remove(struct cg_dirty_stash_table *t, const char *key)
{
    struct cg_dirty_stash_entry **pp = entry_slot(t, key);
    struct cg_dirty_stash_entry *e = *pp;
    if (e == NULL) {
        return false;
    }
    *pp = e->hnext;
    if (e->prev != NULL) {
        e->prev->next = e->next;
    } else {
        t->head = e->next;
    }
    if (e->next != NULL) {
        e->next->prev = e->prev;
    } else {
        t->tail = e->prev;
    }
    t->n--;
    entry_free(e);
    return true;
}

/* Stores (key, value) where value refers into blob; copies what it keeps. */
static int entry_put(struct cg_dirty_stash_table *t, const char *key, const json_t *value,
                     const unsigned char *blob, size_t blob_len, struct cg_err *err)
{
    struct cg_dirty_stash_entry *e = calloc(1, sizeof(*e));

    if (e == NULL || (e->key = strdup(key)) == NULL) {
        free(e);
        cg_err_set(err, "out of memory");
        return -1;
    }
    if (cg_dirty_value_detach(value, blob, blob_len, &e->value, &e->blob, &e->blob_len, err) <
        0) {
        free(e->key);
        free(e);
        return -1;
    }
    entry_remove(t, key);
    if (t->n + 1 > t->nbuckets) {
        table_grow(t);
    }
    struct cg_dirty_stash_entry **slot = &t->buckets[hash_str(key) & (t->nbuckets - 1)];
    e->hnext = *slot;
    *slot = e;
    e->prev = t->tail;
    if (t->tail != NULL) {
        t->tail->next = e;
    } else {
        t->head = e;
    }
    t->tail = e;
    t->n++;
    return 0;
}

static int op_code(const json_t *op)
{
    if (json_is_integer(op)) {
        json_int_t v = json_integer_value(op);
        return v >= 1 && v <= OP_MAX ? (int)v : -1;
    }
    if (json_is_string(op)) {
        for (int i = 1; i <= OP_MAX; i++) {
            if (strcmp(json_string_value(op), op_names[i]) == 0) {
                return i;
            }
        }
    }
    return -1;
}

static int reply_result(struct cg_dirty_frame *out, uint64_t id, json_t *result,
                        const unsigned char *blob, size_t blob_len, size_t max,
                        struct cg_err *err)
{
    json_t *body = json_pack("{s:o}", "result", result ? result : json_null());
    int rc = cg_dirty_frame_build(out, CG_DIRTY_RESPONSE, id, body, blob, blob_len, max, err);
    json_decref(body);
    return rc;
}

static int reply_error(struct cg_dirty_frame *out, uint64_t id, const char *type,
                       const char *table, const json_t *key, const char *message,
                       struct cg_err *err)
{
    json_t *extra = json_pack("{s:s}", "table", table);
    if (key != NULL) {
        json_object_set(extra, "key", (json_t *)key);
    }
    int rc = cg_dirty_frame_build_error(out, id, type, message, extra, err);
    json_decref(extra);
    return rc;
}

int cg_dirty_stash_handle(struct cg_dirty_stash *s, const struct cg_dirty_msg *m,
                          size_t max_message, struct cg_dirty_frame *out, struct cg_err *err)
{
    const json_t *body = m->body;
    uint64_t id = m->hdr.id;
    int op = op_code(json_object_get(body, "op"));
    const json_t *jtable = json_object_get(body, "table");
    const json_t *key = json_object_get(body, "key");
    const json_t *value = json_object_get(body, "value");
    const char *pattern = json_string_value(json_object_get(body, "pattern"));
    const char *table = json_is_string(jtable) ? json_string_value(jtable) : "";
    struct cg_dirty_stash_table *t = NULL, **link = NULL;
    char *kdump = NULL;
    char msg[600];
    int rc = -1;

    if (op < 0) {
        char *opdump = json_dumps(json_object_get(body, "op"), JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(msg, sizeof(msg),
                 "Unknown stash operation: %s (expected put, get, delete, keys, clear, info, "
                 "ensure, exists, delete_table or tables)",
                 opdump != NULL ? opdump : "(none)");
        free(opdump);
        rc = cg_dirty_frame_build_error(out, id, "StashError", msg, NULL, err);
        goto cleanup;
    }
    if (key != NULL && !json_is_null(key)) {
        kdump = json_dumps(key, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
        if (kdump == NULL) {
            cg_err_set(err, "stash key cannot be serialised");
            goto cleanup;
        }
    }
    if ((op == OP_PUT || op == OP_GET || op == OP_DELETE) && kdump == NULL) {
        snprintf(msg, sizeof(msg), "stash %s on table '%s' needs a key", op_names[op], table);
        rc = cg_dirty_frame_build_error(out, id, "StashError", msg, NULL, err);
        goto cleanup;
    }
    t = table_find(s, table, &link);
    switch (op) {
    case OP_PUT:
        t = table_ensure(s, table);
        if (t == NULL || entry_put(t, kdump, value ? value : json_null(), m->blob,
                                   m->hdr.blob_len, err) < 0) {
            snprintf(msg, sizeof(msg), "stash put into '%s' failed: %s", table,
                     t ? err->msg : "out of memory");
            rc = cg_dirty_frame_build_error(out, id, "StashError", msg, NULL, err);
            goto cleanup;
        }
        rc = reply_result(out, id, json_true(), NULL, 0, max_message, err);
        break;
    case OP_GET: {
        struct cg_dirty_stash_entry *e = t ? *entry_slot(t, kdump) : NULL;
        if (e == NULL) {
            snprintf(msg, sizeof(msg), "Key not found: %s", kdump);
            rc = reply_error(out, id, "StashKeyNotFoundError", table, key, msg, err);
        } else {
            rc = reply_result(out, id, json_incref(e->value), e->blob, e->blob_len, max_message,
                              err);
        }
        break;
    }
    case OP_DELETE:
        rc = reply_result(out, id, json_boolean(t != NULL && entry_remove(t, kdump)), NULL, 0,
                          max_message, err);
        break;
    case OP_KEYS: {
        json_t *keys = json_array();
        for (struct cg_dirty_stash_entry *e = t ? t->head : NULL; e != NULL; e = e->next) {
            json_t *k = json_loads(e->key, JSON_DECODE_ANY, NULL);
            const char *ks = json_is_string(k) ? json_string_value(k) : e->key;
            if (k != NULL && (pattern == NULL || fnmatch(pattern, ks, 0) == 0)) {
                json_array_append(keys, k);
            }
            json_decref(k);
        }
        rc = reply_result(out, id, keys, NULL, 0, max_message, err);
        break;
    }
    case OP_CLEAR:
        if (t != NULL) {
            table_clear(t);
        }
        rc = reply_result(out, id, json_true(), NULL, 0, max_message, err);
        break;
    case OP_INFO:
        if (t == NULL) {
            snprintf(msg, sizeof(msg), "Table not found: %s", table);
            rc = reply_error(out, id, "StashTableNotFoundError", table, NULL, msg, err);
        } else {
            rc = reply_result(out, id, json_pack("{s:I,s:s}", "size", (json_int_t)t->n, "table",
                                                 table),
                              NULL, 0, max_message, err);
        }
        break;
    case OP_ENSURE:
        t = table_ensure(s, table);
        rc = reply_result(out, id, json_boolean(t != NULL), NULL, 0, max_message, err);
        break;
    case OP_DELETE_TABLE:
        if (t != NULL) {
            *link = t->next;
            table_free(t);
            s->ntables--;
        }
        rc = reply_result(out, id, json_boolean(t != NULL), NULL, 0, max_message, err);
        break;
    case OP_TABLES: {
        json_t *names = json_array();
        for (struct cg_dirty_stash_table *it = s->tables; it != NULL; it = it->next) {
            json_array_append_new(names, json_string(it->name));
        }
        rc = reply_result(out, id, names, NULL, 0, max_message, err);
        break;
    }
    case OP_EXISTS:
        rc = reply_result(out, id,
                          json_boolean(t != NULL && (kdump == NULL || *entry_slot(t, kdump))),
                          NULL, 0, max_message, err);
        break;
    default:
        break;
    }
cleanup:
    free(kdump);
    return rc;
}
