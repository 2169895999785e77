/* Device assignment for dirty workers (dirty_gpus): the device list from
 * the setting ("0,1,2,3", or "auto": the GPUs `nvidia-smi -L` lists), and
 * the device of a worker's slot, round-robin when there are more workers
 * than devices. The arbiter sets it as CUDA_VISIBLE_DEVICES in the new
 * worker before any app module is imported. The parsing is pure
 * (tests/unit/dirty/test_cg_dirty_gpus.c); cg_dirty_gpus_resolve() runs
 * nvidia-smi for "auto". */
#ifndef CG_DIRTY_GPUS_H
#define CG_DIRTY_GPUS_H

#include <stddef.h>

#include "cg_err.h"

/* At most this many devices. */
#define CG_DIRTY_MAX_GPUS 256

struct cg_dirty_gpus {
    char **ids; /* owned strings, n of them */
    size_t n;
};

/* Splits "0,1,2" (spaces around ids allowed) into `g`. Returns 0, or -1
 * with err naming the bad id (empty, too many). */
int cg_dirty_gpus_parse_list(struct cg_dirty_gpus *g, const char *spec, struct cg_err *err);

/* Reads the output of `nvidia-smi -L` ("GPU 0: NVIDIA A100 (UUID: ...)",
 * one line per device) into `g`: the index of each GPU line, in order;
 * other lines (MIG devices, blank lines) are skipped. Returns 0 or -1. */
int cg_dirty_gpus_parse_smi(struct cg_dirty_gpus *g, const char *text, struct cg_err *err);

/* The device of worker slot `slot` (0, 1, ...): ids[slot % n], or NULL
 * when the list is empty. */
const char *cg_dirty_gpus_for_slot(const struct cg_dirty_gpus *g, int slot);

/* The devices for the dirty_gpus setting: "" leaves `g` empty (off); a
 * list is parsed; "auto" runs `nvidia-smi -L` (found on PATH). Returns 0,
 * or -1 with err (for auto: nvidia-smi missing, failed, or listed no
 * GPU). */
int cg_dirty_gpus_resolve(struct cg_dirty_gpus *g, const char *setting, struct cg_err *err);

void cg_dirty_gpus_free(struct cg_dirty_gpus *g);

#endif
