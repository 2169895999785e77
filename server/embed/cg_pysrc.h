/* The project's Python sources, embedded by mk/pysrc.py (build/gen/cg_pysrc.c).
 * The table ends with a row whose name is NULL. */
#ifndef CG_PYSRC_H
#define CG_PYSRC_H

struct cg_pysrc {
    const char *name;   /* dotted module name, e.g. "gunicorn.dirty.client" */
    int is_package;     /* 1 for an __init__.py */
    const char *path;   /* path in the source tree, for tracebacks */
    const char *source; /* UTF-8 source text */
};

extern const struct cg_pysrc cg_pysrc_table[];

#endif
