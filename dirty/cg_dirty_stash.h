/* The stash: named tables of key -> value shared by every HTTP worker and
 * dirty worker, held in the dirty arbiter's memory (gunicorn keeps them in
 * its arbiter too). Values are kept as encoded protocol values (a jansson
 * value whose bytes tags refer into a private blob), so the arbiter never
 * builds Python objects for them and sends them back unchanged.
 *
 * A STASH frame body is {"op": OP, "table": str, "key"?: value,
 * "value"?: value, "pattern"?: str}; OP is a name ("put", "get", "delete",
 * "keys", "clear", "info", "ensure", "delete_table", "tables", "exists") or
 * gunicorn's number for it (1..10, same order). The reply is RESPONSE
 * {"result": ...} or ERROR with type "StashKeyNotFoundError" /
 * "StashTableNotFoundError" / "StashError". Keys are compared by their
 * compact JSON form (so "1" and 1 are different keys, as in Python).
 *
 * Arbiter process only, single-threaded. */
#ifndef CG_DIRTY_STASH_H
#define CG_DIRTY_STASH_H

#include <jansson.h>
#include <stddef.h>

#include "cg_dirty_codec.h"
#include "cg_err.h"

struct cg_dirty_stash_entry;
struct cg_dirty_stash_table;

struct cg_dirty_stash {
    struct cg_dirty_stash_table *tables; /* owned list */
    size_t ntables;
};

void cg_dirty_stash_init(struct cg_dirty_stash *s);
void cg_dirty_stash_deinit(struct cg_dirty_stash *s);

/* Runs the STASH operation in `m` and builds the reply frame (same id) into
 * `out`, a RESPONSE or an ERROR. Returns 0, or -1 with err when the reply
 * itself cannot be built (the caller answers with a generic error). */
int cg_dirty_stash_handle(struct cg_dirty_stash *s, const struct cg_dirty_msg *m,
                          size_t max_message, struct cg_dirty_frame *out, struct cg_err *err);

#endif
