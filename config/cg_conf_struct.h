/* struct cg_conf: the resolved configuration, one field per gunicorn setting,
 * named exactly as the setting (see config/cg_conf_table.c, the single source
 * of names, CLI flags, defaults and validators; config/cg_conf.h for the API).
 *
 * Type mapping:
 *   int setting    -> int            (user/group/umask included; already resolved)
 *   bool setting   -> bool           (sendfile: see below)
 *   string setting -> char *         (NULL means None; owned by the conf)
 *   list of str    -> struct cg_strlist (owned; empty list: v == NULL, n == 0)
 *   comma lists    -> struct cg_strlist (forwarded_allow_ips, proxy_allow_ips,
 *                     uwsgi_allow_ips, forwarder_headers: already split)
 *   dict           -> no field: the value is a Python dict that only Python
 *                     code reads (logconfig_dict goes to logging.config;
 *                     secure_scheme_headers is turned into the parser's table
 *                     by the worker, which reports a non-str entry there); it
 *                     stays in `values`, where that code takes it.
 *   hooks          -> no field: the callables live in the server's hook table
 *                     (server/embed/cg_py_hooks.h, struct cg_hook_fns), filled from
 *                     `values` when the configuration is loaded or reloaded.
 *                     (post_request is stored in `values` already adapted to
 *                     arity 4, as gunicorn does.)
 *
 * Derived fields (after all sources are applied):
 *   worker_class   normalised to a name of the worker class table
 *                  (config/cg_conf_worker_class.c: "sync", "gthread", "asgi";
 *                  sync with threads > 1 becomes "gthread", as gunicorn; the
 *                  uvicorn worker names become "asgi"), its row in
 *                  worker_class_row. The raw value is kept in worker_class_raw.
 *   proc_name      stays NULL when unset; use default_proc_name then.
 *   sendfile       gunicorn keeps None unless --no-sendfile / sendfile = False;
 *                  here `sendfile` is the effective value (false when set to
 *                  False, else the SENDFILE env var, else true), and
 *                  sendfile_set says whether the setting was given.
 *   statsd_host    kept as the validated address as text: "host:port",
 *                  "[v6]:port", or a unix socket path (NULL = None).
 *
 * Fields are plain data: read them directly. The one Python object is
 * `values`, the validated settings as gunicorn's cfg holds them (the hooks'
 * server.cfg, --print-config, logging.config and the dirty processes read
 * it). Free with cg_conf_free(). */
#ifndef CG_CONF_STRUCT_H
#define CG_CONF_STRUCT_H

#include <stdbool.h>
#include <stddef.h>

#ifndef Py_PYTHON_H
typedef struct _object PyObject;
#endif

struct cg_conf_worker_class;

struct cg_strlist {
    char **v; /* owned array of owned strings */
    size_t n;
};

struct cg_conf {
    /* Config File */
    char *config;
    char *wsgi_app;

    /* Server Socket */
    struct cg_strlist bind;
    int backlog;

    /* Worker Processes */
    int workers;
    char *worker_class;     /* normalised: a name of the worker class table */
    const struct cg_conf_worker_class *worker_class_row; /* its row (cg_conf_worker_class.h) */
    char *worker_class_raw; /* as given (string form), for messages */
    struct cg_strlist worker_class_notes; /* what the master logs once about it */
    int threads;
    int worker_connections;
    int max_requests;
    int max_requests_jitter;
    int max_worker_memory; /* cgunicorn extension: MB of RSS; 0 = off */
    int timeout;
    int request_timeout; /* per-request deadline in seconds, 0: off (cg_py_deadline.c) */
    int graceful_timeout;
    int keepalive;
    char *asgi_loop;
    char *asgi_lifespan;
    int asgi_disconnect_grace_period;
    long websocket_max_message_size;
    char *http_parser;

    /* Security */
    int limit_request_line;
    int limit_request_fields;
    int limit_request_field_size;

    /* Debugging */
    bool reload;
    char *reload_engine;
    struct cg_strlist reload_extra_files;
    bool spew;
    bool check_config;
    bool print_config;

    /* Server Mechanics */
    bool preload_app;
    bool sendfile;
    bool sendfile_set;
    bool reuse_port;
    char *chdir;
    bool daemon;
    struct cg_strlist raw_env;
    char *pidfile;
    char *worker_tmp_dir;
    int user;
    int group;
    int umask;
    bool initgroups;
    char *tmp_upload_dir;
    struct cg_strlist forwarded_allow_ips;
    char *pythonpath;
    char *paste;
    char *proxy_protocol;
    struct cg_strlist proxy_allow_ips;
    char *protocol;
    struct cg_strlist uwsgi_allow_ips;
    struct cg_strlist raw_paste_global_conf;
    bool permit_obsolete_folding;
    bool strip_header_spaces;
    bool permit_unconventional_http_method;
    bool permit_unconventional_http_version;
    bool casefold_http_method;
    struct cg_strlist forwarder_headers;
    char *header_map;
    char *root_path;
    bool root_path_in_path; /* Uvicorn worker subclass: scope path starts with root_path */

    /* Logging */
    char *accesslog;
    bool disable_redirect_access_to_syslog;
    char *access_log_format;
    char *errorlog;
    char *loglevel;
    bool capture_output;
    char *logger_class;
    char *logconfig;
    char *logconfig_json;
    char *syslog_addr;
    bool syslog;
    char *syslog_prefix;
    char *syslog_facility;
    bool enable_stdio_inheritance;
    char *statsd_host;
    char *dogstatsd_tags;
    char *statsd_prefix;
    bool enable_backlog_metric;
    char *metrics_bind; /* NULL: no metrics listener */

    /* Process Naming */
    char *proc_name;
    char *default_proc_name;

    /* SSL */
    char *keyfile;
    char *certfile;
    int ssl_version;
    int cert_reqs;
    char *ca_certs;
    bool suppress_ragged_eofs;
    bool do_handshake_on_connect;
    char *ciphers;

    /* HTTP/2 */
    struct cg_strlist http_protocols;
    char *http2_cleartext;
    int http2_max_concurrent_streams;
    int http2_initial_window_size;
    int http2_max_frame_size;
    int http2_max_header_list_size;

    /* Dirty Arbiters */
    struct cg_strlist dirty_apps;
    int dirty_workers;
    int dirty_timeout;
    int dirty_threads;
    int dirty_queue_limit;
    int dirty_queue_timeout;
    int dirty_graceful_timeout;
    long dirty_max_message_size; /* cgunicorn extension, not in gunicorn */
    long dirty_zero_copy_threshold; /* cgunicorn extension; 0 = off */
    long dirty_max_payload_size;    /* cgunicorn extension */
    int dirty_boot_timeout;         /* cgunicorn extension: seconds for import + init() */
    char *dirty_gpus;               /* cgunicorn extension: "", "auto" or "0,1,..." */
    int dirty_max_requests;         /* cgunicorn extension; 0 = off */
    int dirty_max_requests_jitter;  /* cgunicorn extension */
    int dirty_max_worker_memory;    /* cgunicorn extension: MB of RSS; 0 = off */

    /* Control */
    char *control_socket;
    int control_socket_mode;
    bool control_socket_disable;

    /* Not settings: the application and the loaded values. */
    char *app_uri;    /* APP_MODULE positional, else wsgi_app, else paste; owned */
    PyObject *values; /* dict name -> validated Python value, as gunicorn's cfg
                         holds it (used by --print-config and for hooks'
                         server.cfg); owned */
};

#endif
