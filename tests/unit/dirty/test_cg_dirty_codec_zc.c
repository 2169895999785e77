/* Unit tests for the dirty codec's zero-copy payloads (memfd tags, the
 * header's descriptor count, cg_dirty_fds.c): bytes above the threshold go
 * in sealed memfds and come back equal; what a receiver must refuse
 * (unsealed or short memfds, payloads over the limit, a tag naming a
 * descriptor the frame did not bring) is refused with a message naming it;
 * descriptors pass through a socketpair in frame order. */
#include <Python.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_dirty_codec.h"
#include "cg_dirty_codec_int.h"
#include "cg_dirty_fds.h"
#include "cg_py_modules.h"
#include "cg_test.h"

#define MIB (1u << 20)

static PyObject *globals; /* owned */

static PyObject *eval(const char *expr)
{
    PyObject *v = PyRun_String(expr, Py_eval_input, globals, globals);
    if (v == NULL) {
        PyErr_Print();
        fprintf(stderr, "bad test expression: %s\n", expr);
        exit(2);
    }
    return v;
}

static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) {
        if (fcntl(fd, F_GETFD) >= 0) {
            n++;
        }
    }
    return n;
}

static void test_header_fd_count(void)
{
    unsigned char buf[CG_DIRTY_HEADER_SIZE];
    struct cg_dirty_header h = { .type = CG_DIRTY_CHUNK, .id = 9, .json_len = 2, .nfds = 3 };
    struct cg_dirty_header back;
    struct cg_err err = { { 0 } };

    cg_dirty_header_encode(buf, &h);
    CG_CHECK_INT(buf[5], 3);
    CG_CHECK(cg_dirty_header_decode(buf, 1024, &back, &err) == 0);
    CG_CHECK_INT(back.nfds, 3);
    buf[5] = CG_DIRTY_MAX_FDS + 1;
    CG_CHECK(cg_dirty_header_decode(buf, 1024, &back, &err) < 0);
    CG_CHECK(strstr(err.msg, "file descriptors") != NULL);
    buf[5] = 0;
    buf[6] = 1;
    CG_CHECK(cg_dirty_header_decode(buf, 1024, &back, &err) < 0);
    CG_CHECK(strstr(err.msg, "reserved") != NULL);
}

static void test_memfd_tag_validation(void)
{
    static const struct {
        const char *json;
        size_t nfds;
        const char *want; /* NULL: accepted */
    } cases[] = {
        { "{\"r\":{\"\\u0000m\":[0,5]}}", 1, NULL },
        { "{\"r\":[{\"\\u0000m\":[0,5]},{\"\\u0000m\":[1,0]}]}", 2, NULL },
        { "{\"r\":{\"\\u0000m\":[1,5]}}", 1, "names descriptor #1 but the frame came with 1" },
        { "{\"r\":{\"\\u0000m\":[0,5]}}", 0, "names descriptor #0" },
        { "{\"r\":{\"\\u0000m\":[0]}}", 1, "malformed memfd tag" },
        { "{\"r\":{\"\\u0000m\":[0,-1]}}", 1, "malformed memfd tag" },
        { "{\"r\":{\"\\u0000m\":\"x\"}}", 1, "malformed memfd tag" },
        { "{\"r\":{\"\\u0000z\":[0,1]}}", 1, "expected b, m, i or f" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cg_err err = { { 0 } };
        json_t *v = cg_dirty_body_parse_fds((const unsigned char *)cases[i].json,
                                            strlen(cases[i].json), 0, cases[i].nfds, &err);
        if (cases[i].want == NULL) {
            CG_CHECK(v != NULL);
        } else {
            CG_CHECK(v == NULL);
            if (strstr(err.msg, cases[i].want) == NULL) {
                fprintf(stderr, "case %zu: %s\n", i, err.msg);
                CG_CHECK(0);
            }
        }
        json_decref(v);
    }
    /* the arbiter's routing parse sees the same rule */
    struct cg_dirty_route r;
    struct cg_err err = { { 0 } };
    const char *req = "{\"app_path\":\"m:A\",\"action\":\"a\",\"args\":[{\"\\u0000m\":[0,9]}]}";
    CG_CHECK(cg_dirty_route_parse((const unsigned char *)req, strlen(req), 0, 1, &r, &err) == 0);
    cg_dirty_route_deinit(&r);
    CG_CHECK(cg_dirty_route_parse((const unsigned char *)req, strlen(req), 0, 0, &r, &err) < 0);
}

/* Encodes {"args": [small, big, bytearray(big2)]} with a threshold, checks the
 * memfds (sealed, sized) and decodes them back. */
static void test_roundtrip_through_memfds(void)
{
    struct cg_dirty_zc zc = { .threshold = 1000, .max_payload = 8 * MIB };
    struct cg_dirty_zc_stats st0, st1;
    int fds[CG_DIRTY_MAX_FDS];
    size_t nfds = 0;
    int before = open_fds();
    PyObject *body = eval("{'args': [b'x' * 1000, bytes(range(256)) * 4000, "
                          "bytearray(b'y' * 5000), 'text']}");
    cg_dirty_zc_stats_get(&st0);
    PyObject *parts = cg_dirty_frame_encode_py_parts_fds(CG_DIRTY_REQUEST, 3, body,
                                                         CG_DIRTY_DEFAULT_MAX_MESSAGE, &zc, fds,
                                                         &nfds, NULL);
    CG_CHECK(parts != NULL);
    CG_CHECK_INT(nfds, 2);
    cg_dirty_zc_stats_get(&st1);
    CG_CHECK(st1.sent == st0.sent + 2 && st1.sent_bytes == st0.sent_bytes + 1024000 + 5000);
    for (size_t i = 0; i < nfds; i++) {
        int seals = fcntl(fds[i], F_GET_SEALS);
        CG_CHECK((seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)) ==
                 (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW));
        CG_CHECK(write(fds[i], "z", 1) < 0); /* sealed: nobody changes it in flight */
    }
    /* parts: header+JSON, then only the inline value (1000 bytes: at the threshold) */
    CG_CHECK_INT(PyList_GET_SIZE(parts), 2);
    PyObject *head = PyList_GET_ITEM(parts, 0);
    const unsigned char *hb = (const unsigned char *)PyBytes_AS_STRING(head);
    struct cg_dirty_header h;
    struct cg_err err = { { 0 } };
    CG_CHECK(cg_dirty_header_decode(hb, CG_DIRTY_DEFAULT_MAX_MESSAGE, &h, &err) == 0);
    CG_CHECK_INT(h.nfds, 2);
    CG_CHECK_INT(h.blob_len, 1000);
    CG_CHECK(strstr((const char *)hb + CG_DIRTY_HEADER_SIZE, "{\"\\u0000m\":[0,1024000]}") !=
             NULL);
    /* reassemble header+JSON+blob and decode with the descriptors */
    PyObject *sep = PyBytes_FromStringAndSize("", 0);
    PyObject *joined = PyObject_CallMethod(sep, "join", "O", parts);
    Py_XDECREF(sep);
    CG_CHECK(joined != NULL);
    const unsigned char *jb = (const unsigned char *)PyBytes_AS_STRING(joined);
    PyObject *back = cg_dirty_body_decode_py_fds(jb + CG_DIRTY_HEADER_SIZE, h.json_len,
                                                 jb + CG_DIRTY_HEADER_SIZE + h.json_len,
                                                 h.blob_len, fds, nfds, 8 * MIB);
    CG_CHECK(back != NULL);
    PyDict_SetItemString(globals, "_back", back);
    PyObject *ok = eval("_back['args'] == [b'x' * 1000, bytes(range(256)) * 4000, b'y' * 5000, "
                        "'text'] and type(_back['args'][2]) is bytes");
    CG_CHECK(ok == Py_True);
    /* a receiver with a smaller limit refuses, naming the setting */
    PyObject *refused = cg_dirty_body_decode_py_fds(jb + CG_DIRTY_HEADER_SIZE, h.json_len,
                                                    jb + CG_DIRTY_HEADER_SIZE + h.json_len,
                                                    h.blob_len, fds, nfds, 4096);
    CG_CHECK(refused == NULL && PyErr_ExceptionMatches(PyExc_ValueError));
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    PyObject *msg = PyObject_Str(ev);
    CG_CHECK(strstr(PyUnicode_AsUTF8(msg), "dirty_max_payload_size") != NULL);
    Py_XDECREF(msg);
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(etb);
    cg_dirty_fds_close(fds, nfds);
    Py_XDECREF(ok);
    Py_XDECREF(back);
    Py_XDECREF(joined);
    Py_XDECREF(parts);
    Py_DECREF(body);
    CG_CHECK_INT(open_fds(), before);
}

static void test_sender_limit_and_no_leak(void)
{
    struct cg_dirty_zc zc = { .threshold = 10, .max_payload = 100 };
    int fds[CG_DIRTY_MAX_FDS];
    size_t nfds = 7;
    enum cg_dirty_enc_error why = 0;
    int before = open_fds();
    /* the first value fits in a memfd, the second is over the limit: none stays open */
    PyObject *body = eval("{'args': [b'a' * 50, b'b' * 101]}");
    PyObject *parts = cg_dirty_frame_encode_py_parts_fds(CG_DIRTY_REQUEST, 1, body,
                                                         CG_DIRTY_DEFAULT_MAX_MESSAGE, &zc, fds,
                                                         &nfds, &why);
    CG_CHECK(parts == NULL && nfds == 0 && why == CG_DIRTY_ENC_PAYLOAD_TOO_LARGE);
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    PyObject *msg = ev != NULL ? PyObject_Str(ev) : NULL;
    CG_CHECK(msg != NULL && strstr(PyUnicode_AsUTF8(msg), "args[1]") != NULL &&
             strstr(PyUnicode_AsUTF8(msg), "dirty_max_payload_size") != NULL);
    Py_XDECREF(msg);
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(etb);
    Py_DECREF(body);
    CG_CHECK_INT(open_fds(), before);
    /* no options: everything inline, no descriptors */
    body = eval("{'args': [b'a' * 5000]}");
    parts = cg_dirty_frame_encode_py_parts_fds(CG_DIRTY_REQUEST, 1, body,
                                               CG_DIRTY_DEFAULT_MAX_MESSAGE, NULL, fds, &nfds,
                                               NULL);
    CG_CHECK(parts != NULL && nfds == 0 && PyList_GET_SIZE(parts) == 2);
    Py_XDECREF(parts);
    Py_DECREF(body);
}

/* A receiver refuses memfds that are not sealed or shorter than their tag. */
static void test_receiver_checks(void)
{
    const char *json = "{\"r\":{\"\\u0000m\":[0,100]}}";
    int fd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CG_CHECK(fd >= 0);
    char buf[100];
    memset(buf, 'q', sizeof(buf));
    CG_CHECK(write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
    PyObject *v = cg_dirty_body_decode_py_fds((const unsigned char *)json, strlen(json), NULL, 0,
                                              &fd, 1, MIB);
    CG_CHECK(v == NULL); /* not sealed */
    PyErr_Clear();
    CG_CHECK(ftruncate(fd, 50) == 0);
    CG_CHECK(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW) == 0);
    v = cg_dirty_body_decode_py_fds((const unsigned char *)json, strlen(json), NULL, 0, &fd, 1,
                                    MIB);
    CG_CHECK(v == NULL); /* 50 bytes, the tag says 100 */
    PyErr_Clear();
    const char *json50 = "{\"r\":{\"\\u0000m\":[0,50]}}";
    v = cg_dirty_body_decode_py_fds((const unsigned char *)json50, strlen(json50), NULL, 0, &fd,
                                    1, MIB);
    CG_CHECK(v != NULL);
    Py_XDECREF(v);
    close(fd);
}

/* Descriptors sent with frames arrive in order in the receive FIFO. */
static void test_fds_over_a_socketpair(void)
{
    int sv[2];
    struct cg_dirty_fdq q = { 0 };
    int before = open_fds();

    CG_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    for (int i = 0; i < 3; i++) {
        int p[2];
        CG_CHECK(pipe2(p, O_CLOEXEC) == 0);
        char c = (char)('a' + i);
        CG_CHECK(write(p[1], &c, 1) == 1);
        struct iovec iov = { .iov_base = "frame", .iov_len = 5 };
        CG_CHECK(cg_dirty_fds_send(sv[0], &iov, 1, p, 1, 0) == 5);
        close(p[0]);
        close(p[1]);
    }
    char data[64];
    size_t got = 0;
    while (got < 15) {
        struct iovec iov = { .iov_base = data + got, .iov_len = sizeof(data) - got };
        ssize_t n = cg_dirty_fds_recv(sv[1], &iov, 1, &q);
        CG_CHECK(n > 0);
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    CG_CHECK_INT(q.n, 3); /* the read end of each pipe, in order */
    int fds[3];
    CG_CHECK(cg_dirty_fdq_take(&q, fds, 4) < 0);
    CG_CHECK(cg_dirty_fdq_take(&q, fds, 2) == 0);
    char c = 0;
    CG_CHECK(read(fds[0], &c, 1) == 1 && c == 'a');
    cg_dirty_fds_close(fds, 2);
    cg_dirty_fdq_deinit(&q); /* closes the third */
    close(sv[0]);
    close(sv[1]);
    CG_CHECK_INT(open_fds(), before);
}

static const struct cg_test_case cases[] = {
    CG_TEST(test_header_fd_count),
    CG_TEST(test_memfd_tag_validation),
    CG_TEST(test_roundtrip_through_memfds),
    CG_TEST(test_sender_limit_and_no_leak),
    CG_TEST(test_receiver_checks),
    CG_TEST(test_fds_over_a_socketpair),
};

int main(void)
{
    struct cg_err err = { { 0 } };

    if (cg_py_modules_register(&err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 2;
    }
    Py_Initialize();
    globals = PyDict_New();
    PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins());
    int rc = cg_test_run(cases, sizeof(cases) / sizeof(cases[0]));
    Py_DECREF(globals);
    Py_Finalize();
    return rc;
}
