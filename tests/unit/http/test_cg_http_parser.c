/* Runs every case of gunicorn's HTTP request corpus (converted from the
 * pinned upstream sdist into build/corpus/http-requests by mk/corpus.py, or
 * $CG_HTTP_CORPUS) through cg_http_parser: fed whole, and
 * split in two at every byte boundary. Valid cases must give exactly the
 * expected requests (method, URI parts, version, ordered headers, body,
 * trailers, pipelined ones included); invalid cases the named error class.
 * Plus targeted tests of body decoding, limits, PROXY and error pages. */
#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "cg_http_iplist.h"
#include "cg_http_parser.h"
#include "cg_test.h"

/* Cases that do not pass, each with the reason. Empty: every case passes. */
static const struct {
    const char *file;
    const char *reason;
} known_failures[] = {
    { NULL, NULL },
};

/* Valid corpus cases that cgunicorn refuses on purpose (docs/compatibility.md):
 * file -> the error class its parser reports. */
static const struct {
    const char *file;
    const char *error;
    const char *reason;
} refused_on_purpose[] = {
    { "valid/099.json", "NoMoreData",
      "Content-Length 17914 with 8599 body bytes before EOF: a truncated body is an error, "
      "where upstream hands the short body over as whole" },
    { NULL, NULL, NULL },
};

static const char *refused_error(const char *file)
{
    for (size_t i = 0; refused_on_purpose[i].file != NULL; i++) {
        if (strcmp(refused_on_purpose[i].file, file) == 0) {
            return refused_on_purpose[i].error;
        }
    }
    return NULL;
}

/* RFC 9112 3.2, which cgunicorn applies and upstream does not
 * (docs/compatibility.md): an HTTP/1.1 request needs exactly one Host
 * header. In a valid case, the index of the first request without one (its
 * predecessors are still parsed, then InvalidHeader); -1 if none. */
static int first_without_host(json_t *requests)
{
    for (size_t i = 0; i < json_array_size(requests); i++) {
        json_t *r = json_array_get(requests, i);
        json_t *v = json_object_get(r, "version");
        json_t *hdrs = json_object_get(r, "headers");
        int hosts = 0;
        if (json_integer_value(json_array_get(v, 0)) * 10 + json_integer_value(json_array_get(v, 1)) <
            11) {
            continue;
        }
        for (size_t k = 0; k < json_array_size(hdrs); k++) {
            const char *name = json_string_value(json_array_get(json_array_get(hdrs, k), 0));
            hosts += name != NULL && strcmp(name, "HOST") == 0;
        }
        if (hosts != 1) {
            return (int)i;
        }
    }
    return -1;
}

/* In an invalid case, the errors found only after the head, which the Host
 * rule (applied when the head ends) now comes before, when the first
 * request is HTTP/1.1 without Host. */
static bool host_rule_first(const unsigned char *raw, size_t len, const char *error)
{
    static const char *const body_stage[] = { "InvalidChunkSize", "ChunkMissingTerminator",
                                              "InvalidChunkExtension", NULL };
    const unsigned char *end = memmem(raw, len, "\r\n\r\n", 4);
    const unsigned char *eol = memmem(raw, len, "\r\n", 2);
    bool body = false;

    for (size_t i = 0; body_stage[i] != NULL; i++) {
        body = body || (error != NULL && strcmp(error, body_stage[i]) == 0);
    }
    if (!body || end == NULL || eol == NULL || eol - raw < 8 ||
        memcmp(eol - 8, "HTTP/1.1", 8) != 0) {
        return false;
    }
    for (const unsigned char *l = eol + 2; l < end;) {
        const unsigned char *e = memmem(l, (size_t)(end - l) + 2, "\r\n", 2);
        if (e - l >= 5 && strncasecmp((const char *)l, "host:", 5) == 0) {
            return false;
        }
        l = e + 2;
    }
    return true;
}

static const char *known_failure(const char *file)
{
    for (size_t i = 0; known_failures[i].file != NULL; i++) {
        if (strcmp(known_failures[i].file, file) == 0) {
            return known_failures[i].reason;
        }
    }
    return NULL;
}

/* ---- helpers ------------------------------------------------------------- */

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes base64 into a malloc'd buffer. */
static unsigned char *b64decode(const char *s, size_t *out_len)
{
    size_t n = strlen(s), o = 0;
    unsigned char *out = malloc(n * 3 / 4 + 4);
    unsigned acc = 0;
    int bits = 0;

    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0) {
            continue;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *out_len = o;
    return out;
}

/* A latin-1 byte string as a JSON (UTF-8) string, as Python decodes it. */
static json_t *latin1_json(const char *s, size_t n)
{
    char *u = malloc(n * 2 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            u[o++] = (char)c;
        } else {
            u[o++] = (char)(0xc0 | (c >> 6));
            u[o++] = (char)(0x80 | (c & 0x3f));
        }
    }
    json_t *j = json_stringn(u, o);
    free(u);
    return j;
}

struct bytes {
    char *data;
    size_t len, cap;
};

static void bytes_add(struct bytes *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* The test's own view of the URI, as gunicorn's treq.py derives it. */
static json_t *uri_json(const struct cg_http_request *r)
{
    const char *nl = r->uri_netloc.ptr;
    size_t nn = r->uri_netloc.len;
    json_t *host = json_null();
    long port = 0;

    if (nn > 0) {
        const char *colon = NULL;
        for (size_t i = 0; i < nn; i++) {
            if (nl[i] == ':') {
                colon = nl + i;
            }
        }
        size_t hn = colon ? (size_t)(colon - nl) : nn;
        json_decref(host);
        host = hn ? latin1_json(nl, hn) : json_null();
        /* urlsplit().port: from the part after '@', past a bracketed host */
        const char *hi = nl, *end = nl + nn;
        for (const char *q = nl; q < end; q++) {
            if (*q == '@') {
                hi = q + 1;
            }
        }
        const char *ps = NULL;
        const char *br = memchr(hi, '[', (size_t)(end - hi));
        if (br != NULL) {
            const char *rb = memchr(br, ']', (size_t)(end - br));
            ps = rb ? memchr(rb, ':', (size_t)(end - rb)) : NULL;
        } else {
            ps = memchr(hi, ':', (size_t)(end - hi));
        }
        if (ps != NULL) {
            port = strtol(ps + 1, NULL, 10);
        }
    }
    return json_pack("{s:o, s:o, s:o, s:I, s:o, s:o, s:o}", "fragment",
                     latin1_json(r->fragment.ptr, r->fragment.len), "host", host, "path",
                     latin1_json(r->path.ptr, r->path.len), "port", (json_int_t)(port ? port : 80),
                     "query", latin1_json(r->query.ptr, r->query.len), "raw",
                     latin1_json(r->uri.ptr, r->uri.len), "scheme",
                     latin1_json(r->uri_scheme.ptr, r->uri_scheme.len));
}

static json_t *headers_json(const struct cg_http_header *h, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, json_pack("[o, o]", latin1_json(h[i].name.ptr, h[i].name.len),
                                           latin1_json(h[i].value.ptr, h[i].value.len)));
        /* spans are NUL-terminated */
        if (h[i].name.ptr[h[i].name.len] != '\0' || h[i].value.ptr[h[i].value.len] != '\0') {
            json_array_append_new(a, json_string("<span not NUL-terminated>"));
        }
    }
    return a;
}

/* ---- running one case ------------------------------------------------------ */

struct outcome {
    json_t *requests;     /* array, shaped like the corpus's "requests" */
    char error[64];       /* error class, "" if none */
    char detail[CG_HTTP_ERROR_DETAIL_MAX];
};

/* Feeds raw to a parser as fragments [0, split) and [split, len) (split ==
 * len: whole), reading bodies `max` bytes at a time, until the stream ends,
 * a request asks to close, or an error. */
static void run(const struct cg_http_limits *limits, const unsigned char *raw, size_t len,
                size_t split, size_t max, struct outcome *o)
{
    struct cg_http_parser p;
    const char *frag[2] = { (const char *)raw, (const char *)raw + split };
    size_t flen[2] = { split, len - split };
    int nfrag = split == len ? 1 : 2, fi = 0;
    const char *in = NULL;
    size_t avail = 0, used = 0;
    enum cg_http_status st;

    o->requests = json_array();
    o->error[0] = '\0';
    o->detail[0] = '\0';
    cg_http_parser_init(&p, limits, NULL);
#define REFILL()                                                                           \
    (fi < nfrag ? (in = frag[fi], avail = flen[fi], fi++, 1) : 0)
    REFILL();
    for (;;) {
        /* head */
        for (;;) {
            st = cg_http_parser_head(&p, in, avail, &used);
            in += used;
            avail -= used;
            if (st != CG_HTTP_NEED_MORE) {
                break;
            }
            if (avail != 0) {
                snprintf(o->error, sizeof(o->error), "NEED_MORE with input left");
                goto done;
            }
            if (!REFILL()) {
                st = cg_http_parser_eof(&p);
                break;
            }
        }
        if (st == CG_HTTP_EOF) {
            goto done;
        }
        if (st == CG_HTTP_ERROR) {
            goto error;
        }
        /* body */
        struct bytes body = { 0 };
        for (;;) {
            const char *d;
            size_t dl;
            st = cg_http_parser_body(&p, in, avail, &used, max, &d, &dl);
            in += used;
            avail -= used;
            if (st == CG_HTTP_BODY_DATA) {
                if (dl == 0 || (max && dl > max)) {
                    snprintf(o->error, sizeof(o->error), "bad BODY_DATA length %zu", dl);
                    free(body.data);
                    goto done;
                }
                bytes_add(&body, d, dl);
                continue;
            }
            if (st == CG_HTTP_NEED_MORE) {
                if (avail != 0) {
                    snprintf(o->error, sizeof(o->error), "NEED_MORE with body input left");
                    free(body.data);
                    goto done;
                }
                if (!REFILL()) {
                    st = cg_http_parser_eof(&p);
                    if (st != CG_HTTP_BODY_DONE) {
                        break;
                    }
                }
                continue;
            }
            break;
        }
        if (st == CG_HTTP_ERROR) {
            free(body.data);
            goto error;
        }
        const struct cg_http_request *r = cg_http_parser_request(&p);
        json_t *req = json_pack(
            "{s:o, s:o, s:o, s:[i, i], s:o, s:o}", "method", latin1_json(r->method.ptr, r->method.len),
            "uri", uri_json(r), "headers", headers_json(r->headers, r->n_headers), "version",
            r->version_major, r->version_minor, "body", latin1_json(body.data ? body.data : "", body.len),
            "trailers", headers_json(r->trailers, r->n_trailers));
        free(body.data);
        json_array_append_new(o->requests, req);
        if (cg_http_request_should_close(r)) {
            goto done;
        }
        cg_http_parser_next(&p);
    }
error:
    snprintf(o->error, sizeof(o->error), "%s", cg_http_error_name(cg_http_parser_error(&p)->kind));
    snprintf(o->detail, sizeof(o->detail), "%s", cg_http_parser_error(&p)->detail);
done:
    cg_http_parser_deinit(&p);
#undef REFILL
}

/* Applies a case's "settings" to limits. Returns 0, or -1 naming an unknown
 * setting in why. */
static int apply_settings(json_t *settings, struct cg_http_limits *l,
                          struct cg_http_iplist **lists, char *why, size_t whylen)
{
    const char *key;
    json_t *v;
    struct cg_err err;

    json_object_foreach(settings, key, v) {
        if (strcmp(key, "limit_request_line") == 0) {
            l->limit_request_line = (int)json_integer_value(v);
        } else if (strcmp(key, "limit_request_fields") == 0) {
            l->limit_request_fields = (int)json_integer_value(v);
        } else if (strcmp(key, "limit_request_field_size") == 0) {
            l->limit_request_field_size = (int)json_integer_value(v);
        } else if (strcmp(key, "permit_obsolete_folding") == 0) {
            l->permit_obsolete_folding = json_is_true(v);
        } else if (strcmp(key, "strip_header_spaces") == 0) {
            l->strip_header_spaces = json_is_true(v);
        } else if (strcmp(key, "casefold_http_method") == 0) {
            l->casefold_http_method = json_is_true(v);
        } else if (strcmp(key, "permit_unconventional_http_method") == 0) {
            l->permit_unconventional_http_method = json_is_true(v);
        } else if (strcmp(key, "permit_unconventional_http_version") == 0) {
            l->permit_unconventional_http_version = json_is_true(v);
        } else if (strcmp(key, "header_map") == 0) {
            const char *s = json_string_value(v);
            l->header_map = strcmp(s, "refuse") == 0      ? CG_HTTP_HEADER_MAP_REFUSE
                            : strcmp(s, "dangerous") == 0 ? CG_HTTP_HEADER_MAP_DANGEROUS
                                                          : CG_HTTP_HEADER_MAP_DROP;
        } else if (strcmp(key, "proxy_protocol") == 0) {
            const char *s = json_is_string(v) ? json_string_value(v) : NULL;
            l->proxy_protocol = json_is_true(v)                 ? CG_HTTP_PROXY_AUTO
                                : s && strcmp(s, "v1") == 0     ? CG_HTTP_PROXY_V1
                                : s && strcmp(s, "v2") == 0     ? CG_HTTP_PROXY_V2
                                : s && strcmp(s, "auto") == 0   ? CG_HTTP_PROXY_AUTO
                                                                : CG_HTTP_PROXY_OFF;
        } else if (strcmp(key, "forwarded_allow_ips") == 0 || strcmp(key, "proxy_allow_ips") == 0) {
            struct cg_http_iplist *list = cg_http_iplist_parse(json_string_value(v), key, &err);
            if (list == NULL) {
                snprintf(why, whylen, "%s", err.msg);
                return -1;
            }
            if (key[0] == 'f') {
                l->forwarded_allow_ips = lists[0] = list;
            } else {
                l->proxy_allow_ips = lists[1] = list;
            }
        } else {
            snprintf(why, whylen, "setting '%s' not supported by the test runner", key);
            return -1;
        }
    }
    return 0;
}

/* Expected requests with bodies decoded to raw strings, like run() builds. */
static json_t *expected_requests(json_t *exp)
{
    json_t *out = json_array();
    size_t i;
    json_t *r;

    json_array_foreach(exp, i, r) {
        json_t *c = json_deep_copy(r);
        json_t *body = json_object_get(r, "body");
        size_t bl = 0;
        unsigned char *b = NULL;
        if (json_is_object(body)) {
            b = b64decode(json_string_value(json_object_get(body, "base64")), &bl);
        } else if (json_is_string(body)) {
            bl = json_string_length(body);
            b = malloc(bl + 1);
            memcpy(b, json_string_value(body), bl);
        }
        json_object_set_new(c, "body", latin1_json(b ? (char *)b : "", bl));
        free(b);
        if (json_object_get(c, "trailers") == NULL) {
            json_object_set_new(c, "trailers", json_array());
        }
        json_array_append_new(out, c);
    }
    return out;
}

static char corpus_dir[PATH_MAX];

static int find_corpus(void)
{
    const char *env = getenv("CG_HTTP_CORPUS");
    char exe[PATH_MAX];
    ssize_t n;

    if (env != NULL && *env != '\0') {
        snprintf(corpus_dir, sizeof(corpus_dir), "%s", env);
        return access(corpus_dir, R_OK) == 0 ? 0 : -1;
    }
    /* build/tests/http/<binary> -> the build directory is two levels up,
     * where `make corpus` converts upstream's corpus (mk/corpus.py) */
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(exe, '/');
            if (slash == NULL) {
                break;
            }
            *slash = '\0';
        }
        snprintf(corpus_dir, sizeof(corpus_dir), "%s/corpus/http-requests", exe);
        if (access(corpus_dir, R_OK) == 0) {
            return 0;
        }
    }
    return -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs all cases of one subdirectory; returns the number of cases run. */
static int run_dir(const char *sub, bool valid_dir)
{
    char path[PATH_MAX];
    DIR *d;
    struct dirent *de;
    char *names[1024];
    int nnames = 0, ran = 0;

    snprintf(path, sizeof(path), "%s/%s", corpus_dir, sub);
    d = opendir(path);
    if (d == NULL) {
        fprintf(stderr, "corpus: cannot open %s\n", path);
        cg_test_failures_in_test++;
        return 0;
    }
    while ((de = readdir(d)) != NULL && nnames < 1024) {
        size_t l = strlen(de->d_name);
        if (l > 5 && strcmp(de->d_name + l - 5, ".json") == 0) {
            names[nnames++] = strdup(de->d_name);
        }
    }
    closedir(d);
    qsort(names, (size_t)nnames, sizeof(names[0]), cmp_str);

    for (int k = 0; k < nnames; k++) {
        char file[PATH_MAX], label[300], why[256] = "";
        json_error_t jerr;
        snprintf(file, sizeof(file), "%s/%s", path, names[k]);
        snprintf(label, sizeof(label), "%s/%s", sub, names[k]);
        json_t *c = json_load_file(file, JSON_ALLOW_NUL, &jerr);
        if (c == NULL) {
            fprintf(stderr, "corpus %s: bad JSON: %s\n", label, jerr.text);
            cg_test_failures_in_test++;
            continue;
        }
        size_t rawlen;
        unsigned char *raw = b64decode(json_string_value(json_object_get(c, "raw_base64")), &rawlen);
        struct cg_http_limits limits;
        struct cg_http_iplist *lists[2] = { NULL, NULL };
        cg_http_limits_init(&limits);
        const char *known = known_failure(label);
        const char *refused = refused_error(label);
        bool valid = valid_dir && refused == NULL;
        int failed = 0;

        if (apply_settings(json_object_get(c, "settings"), &limits, lists, why, sizeof(why)) < 0) {
            failed = 1;
        }
        json_t *exp = valid ? expected_requests(json_object_get(c, "requests")) : NULL;
        const char *exp_err = valid     ? ""
                              : refused ? refused
                                        : json_string_value(json_object_get(c, "error"));
        int no_host = valid ? first_without_host(json_object_get(c, "requests")) : -1;
        if (no_host >= 0) { /* the requests before it, then the refusal */
            while (json_array_size(exp) > (size_t)no_host) {
                json_array_remove(exp, json_array_size(exp) - 1);
            }
            exp_err = "InvalidHeader";
        } else if (!valid && host_rule_first(raw, rawlen, exp_err)) {
            exp_err = "InvalidHeader";
        }
        /* split == rawlen: whole; then every boundary */
        for (size_t split = rawlen + 1; !failed && split-- > 0;) {
            struct outcome o;
            size_t max = split == rawlen ? 0 : 1 + split % 7;
            run(&limits, raw, rawlen, split, max, &o);
            if (valid && (strcmp(o.error, exp_err) != 0 || !json_equal(o.requests, exp))) {
                char *got = json_dumps(o.requests, JSON_COMPACT);
                snprintf(why, sizeof(why), "split %zu: error '%s' (%s); got %.120s", split,
                         o.error, o.detail, got);
                free(got);
                failed = 1;
            } else if (!valid && strcmp(o.error, exp_err) != 0) {
                snprintf(why, sizeof(why), "split %zu: expected %s, got '%s' (%s)", split, exp_err,
                         o.error, o.detail);
                failed = 1;
            }
            json_decref(o.requests);
        }
        if (failed && known == NULL) {
            fprintf(stderr, "corpus %s FAILED: %s\n", label, why);
            cg_test_failures_in_test++;
        } else if (failed) {
            fprintf(stderr, "corpus %s: known failure (%s)\n", label, known);
        } else if (known != NULL) {
            fprintf(stderr, "corpus %s passes but is listed as a known failure\n", label);
            cg_test_failures_in_test++;
        }
        ran++;
        json_decref(exp);
        json_decref(c);
        free(raw);
        cg_http_iplist_free(lists[0]);
        cg_http_iplist_free(lists[1]);
        free(names[k]);
    }
    return ran;
}

static void test_corpus_valid(void)
{
    CG_CHECK(find_corpus() == 0);
    int n = run_dir("valid", true);
    CG_CHECK(n > 0);
    printf("corpus: %d valid cases run\n", n);
}

static void test_corpus_invalid(void)
{
    CG_CHECK(find_corpus() == 0);
    int n = run_dir("invalid", false);
    CG_CHECK(n > 0);
    printf("corpus: %d invalid cases run\n", n);
}

CG_TEST_MAIN(CG_TEST(test_corpus_valid), CG_TEST(test_corpus_invalid))
