/* The settings validators. Each one takes the raw value (a str from the command
 * line or a default, any object from a config file) and returns what gunicorn
 * would hold after its validator ran: the same accepted inputs, the same
 * normalisation (strip, split, int(x, 0), arity checks, ...). The value logic
 * lives in a small Python module embedded below (written for cgunicorn) because
 * config values are Python objects; the C wrappers give the settings table typed
 * function pointers and turn exceptions into struct cg_err messages. */
#include "cg_conf_int.h"
#include "cg_py_source.h"

/* The helper module's source (executed once, in module "_cgunicorn_conf"). */
static const char helpers_src[] =
    "import grp as _grp\n"
    "import types as _types\n"
    "import os as _os\n"
    "import pwd as _pwd\n"
    "import re as _re\n"
    "\n"
    "\n"
    "def _kind(v):\n"
    "    return \"%s %r\" % (type(v).__name__, v)\n"
    "\n"
    "\n"
    "def string(v):\n"
    "    if v is None:\n"
    "        return None\n"
    "    if not isinstance(v, str):\n"
    "        raise TypeError(\"expected a string, got %s\" % _kind(v))\n"
    "    return v.strip()\n"
    "\n"
    "\n"
    "def boolean(v):\n"
    "    if v is None or isinstance(v, bool):\n"
    "        return v\n"
    "    if not isinstance(v, str):\n"
    "        raise TypeError(\"expected True or False, got %s\" % _kind(v))\n"
    "    low = v.strip().lower()\n"
    "    if low == \"true\":\n"
    "        return True\n"
    "    if low == \"false\":\n"
    "        return False\n"
    "    raise ValueError(\"%r is not a boolean; use true or false\" % v)\n"
    "\n"
    "\n"
    "def dictionary(v):\n"
    "    if not isinstance(v, dict):\n"
    "        raise TypeError(\"expected a dict, got %s\" % _kind(v))\n"
    "    return v\n"
    "\n"
    "\n"
    "def pos_int(v):\n"
    "    if isinstance(v, int):\n"
    "        v = int(v)\n"
    "    elif isinstance(v, str):\n"
    "        try:\n"
    "            v = int(v, 0)\n"
    "        except ValueError:\n"
    "            raise ValueError(\"%r is not an integer; use e.g. 4\" % v) from None\n"
    "    else:\n"
    "        raise TypeError(\"expected an integer, got %s\" % _kind(v))\n"
    "    if v < 0:\n"
    "        raise ValueError(\"%d is negative; expected 0 or more\" % v)\n"
    "    return v\n"
    "\n"
    "\n"
    "def int_range(v, lo, hi):\n"
    "    v = pos_int(v)\n"
    "    if v < lo or v > hi:\n"
    "        raise ValueError(\"%d is out of range; expected %d to %d\" % (v, lo, hi))\n"
    "    return v\n"
    "\n"
    "\n"
    "def as_is(v):\n"
    "    return v\n"
    "\n"
    "\n"
    "def ssl_version(v):\n"
    "    if str(v) != \"2\":\n"
    "        import sys\n"
    "        sys.stderr.write(\"Warning: option `ssl_version` is deprecated and it is \"\n"
    "                         \"ignored. Use ssl_context instead.\\n\")\n"
    "    return v\n"
    "\n"
    "\n"
    "def str_list(v):\n"
    "    if not v:\n"
    "        return []\n"
    "    if isinstance(v, str):\n"
    "        v = [v]\n"
    "    try:\n"
    "        items = list(v)\n"
    "    except TypeError:\n"
    "        raise TypeError(\"expected a string or a list of strings, got %s\" % _kind(v)) from None\n"
    "    return [string(x) for x in items]\n"
    "\n"
    "\n"
    "def files_or_patterns(v):\n"
    "    out = []\n"
    "    for entry in str_list(v):\n"
    "        if entry is not None and not __import__(\"glob\").has_magic(entry) and not _os.path.exists(entry):\n"
    "            raise ValueError(\"file %r does not exist\" % entry)\n"
    "        out.append(entry)\n"
    "    return out\n"
    "\n"
    "\n"
    "def comma_list(v):\n"
    "    v = string(v)\n"
    "    if not v:\n"
    "        return []\n"
    "    return [x.strip() for x in v.split(\",\") if x]\n"
    "\n"
    "\n"
    "def addr_list(v):\n"
    "    out = comma_list(v)\n"
    "    if out == ['127.0.0.1', '::1']:\n"
    "        return out  # the default: valid, and ipaddress stays unimported\n"
    "    import ipaddress as _ipaddress\n"
    "    for a in out:\n"
    "        if a == \"*\":\n"
    "            continue\n"
    "        try:\n"
    "            _ipaddress.ip_network(a)\n"
    "        except ValueError as e:\n"
    "            raise ValueError(\"%s (expected IP addresses or networks, or *)\" % e) from None\n"
    "    return out\n"
    "\n"
    "\n"
    "def klass(v):\n"
    "    if isinstance(v, (_types.FunctionType, _types.MethodType)):\n"
    "        v = v()\n"
    "    if isinstance(v, type):\n"
    "        return v\n"
    "    return string(v)\n"
    "\n"
    "\n"
    "def arity(f):\n"
    "    import inspect  # only when a hook is set: keeps it out of workers' memory\n"
    "    n = 0\n"
    "    for p in inspect.signature(f).parameters.values():\n"
    "        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):\n"
    "            n += 1\n"
    "    return n\n"
    "\n"
    "\n"
    "def hook(v, want):\n"
    "    if isinstance(v, str):\n"
    "        if \".\" not in v:\n"
    "            raise TypeError(\"%r is not an import path; use module.function\" % v)\n"
    "        mod_name, obj_name = v.rsplit(\".\", 1)\n"
    "        try:\n"
    "            mod = __import__(mod_name, fromlist=[obj_name])\n"
    "        except ImportError as e:\n"
    "            raise TypeError(str(e)) from None\n"
    "        try:\n"
    "            v = getattr(mod, obj_name)\n"
    "        except AttributeError:\n"
    "            raise TypeError(\"cannot load %r from %r\" % (obj_name, mod_name)) from None\n"
    "    if not callable(v):\n"
    "        raise TypeError(\"expected a callable, got %s\" % _kind(v))\n"
    "    if want >= 0 and arity(v) != want:\n"
    "        raise TypeError(\"%s takes %d positional arguments; expected %d\"\n"
    "                        % (getattr(v, \"__qualname__\", repr(v)), arity(v), want))\n"
    "    return v\n"
    "\n"
    "\n"
    "def post_request(v):\n"
    "    v = hook(v, -1)\n"
    "    n = arity(v)\n"
    "    if n == 4:\n"
    "        return v\n"
    "    if n == 3:\n"
    "        return lambda worker, req, environ, _resp: v(worker, req, environ)\n"
    "    if n == 2:\n"
    "        return lambda worker, req, _environ, _resp: v(worker, req)\n"
    "    raise TypeError(\"%s takes %d positional arguments; expected 2, 3 or 4\"\n"
    "                    % (getattr(v, \"__qualname__\", repr(v)), n))\n"
    "\n"
    "\n"
    "def user(v):\n"
    "    if v is None:\n"
    "        return _os.geteuid()\n"
    "    if isinstance(v, int):\n"
    "        return v\n"
    "    v = string(v)\n"
    "    if v.isdigit():\n"
    "        return int(v)\n"
    "    try:\n"
    "        return _pwd.getpwnam(v).pw_uid\n"
    "    except KeyError:\n"
    "        raise ValueError(\"no such user: %r\" % v) from None\n"
    "\n"
    "\n"
    "def group(v):\n"
    "    if v is None:\n"
    "        return _os.getegid()\n"
    "    if isinstance(v, int):\n"
    "        return v\n"
    "    v = string(v)\n"
    "    if v.isdigit():\n"
    "        return int(v)\n"
    "    try:\n"
    "        return _grp.getgrnam(v).gr_gid\n"
    "    except KeyError:\n"
    "        raise ValueError(\"no such group: %r\" % v) from None\n"
    "\n"
    "\n"
    "def getcwd():\n"
    "    try:\n"
    "        a = _os.stat(_os.environ[\"PWD\"])\n"
    "        b = _os.stat(_os.getcwd())\n"
    "        if (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev):\n"
    "            return _os.environ[\"PWD\"]\n"
    "    except Exception:\n"
    "        pass\n"
    "    return _os.getcwd()\n"
    "\n"
    "\n"
    "def chdir(v):\n"
    "    v = string(v)\n"
    "    path = _os.path.abspath(_os.path.normpath(_os.path.join(getcwd(), v)))\n"
    "    if not _os.path.exists(path):\n"
    "        raise ValueError(\"can't chdir to %r: no such directory\" % v)\n"
    "    return path\n"
    "\n"
    "\n"
    "def address(v, default_port=\"8000\"):\n"
    "    if _re.match(r\"unix:(//)?\", v):\n"
    "        return _re.split(r\"unix:(//)?\", v)[-1]\n"
    "    if v.startswith(\"fd://\"):\n"
    "        try:\n"
    "            return int(v[5:])\n"
    "        except ValueError:\n"
    "            raise ValueError(\"%r is not a valid file descriptor; use fd://N\" % v[5:]) from None\n"
    "    if v.startswith(\"tcp://\"):\n"
    "        v = v[6:]\n"
    "    host, port = v, default_port\n"
    "    if \"[\" in v and \"]\" in v:\n"
    "        host = v.split(\"]\")[0][1:]\n"
    "        port = (v.split(\"]:\") + [default_port])[1]\n"
    "    elif \":\" in v:\n"
    "        host, port = (v.split(\":\") + [default_port])[:2]\n"
    "    elif v == \"\":\n"
    "        host, port = \"0.0.0.0\", default_port\n"
    "    try:\n"
    "        port = int(port)\n"
    "    except ValueError:\n"
    "        raise ValueError(\"%r is not a valid port number; use HOST:PORT, unix:PATH or fd://N\"\n"
    "                         % port) from None\n"
    "    return host.lower(), port\n"
    "\n"
    "\n"
    "def statsd(v):\n"
    "    v = string(v)\n"
    "    if v is None:\n"
    "        return None\n"
    "    m = _re.match(r\"^unix:(\\d+)$\", v)\n"
    "    if m:\n"
    "        return (\"unix\", int(m.group(1)))\n"
    "    try:\n"
    "        return address(v, \"8125\")\n"
    "    except ValueError:\n"
    "        raise TypeError(\"%r: expected host:port or unix://PATH\" % v) from None\n"
    "\n"
    "\n"
    "def choice(v, allowed, none_value, bool_values=None):\n"
    "    if v is None:\n"
    "        return none_value\n"
    "    if bool_values is not None and isinstance(v, bool):\n"
    "        return bool_values[1] if v else bool_values[0]\n"
    "    if not isinstance(v, str):\n"
    "        raise TypeError(\"expected a string, got %s\" % _kind(v))\n"
    "    low = v.strip().lower()\n"
    "    if low not in allowed:\n"
    "        raise ValueError(\"%r is not one of: %s\" % (v, \", \".join(dict.fromkeys(allowed))))\n"
    "    return allowed[low] if isinstance(allowed, dict) else low\n"
    "\n"
    "\n"
    "def proxy_protocol(v):\n"
    "    return choice(v, {\"false\": \"off\", \"off\": \"off\", \"0\": \"off\", \"none\": \"off\",\n"
    "                      \"true\": \"auto\", \"auto\": \"auto\", \"1\": \"auto\",\n"
    "                      \"v1\": \"v1\", \"v2\": \"v2\"}, \"off\", (\"off\", \"auto\"))\n"
    "\n"
    "\n"
    "def http2_cleartext(v):\n"
    "    return choice(v, (\"off\", \"prior-knowledge\", \"upgrade\", \"both\"), \"off\",\n"
    "                  (\"off\", \"prior-knowledge\"))\n"
    "\n"
    "\n"
    "def header_map(v):\n"
    "    return choice(v, (\"drop\", \"refuse\", \"dangerous\"), None)\n"
    "\n"
    "\n"
    "def asgi_loop(v):\n"
    "    return choice(v, (\"auto\", \"asyncio\", \"uvloop\"), \"auto\")\n"
    "\n"
    "\n"
    "def asgi_lifespan(v):\n"
    "    return choice(v, (\"auto\", \"on\", \"off\"), \"auto\")\n"
    "\n"
    "\n"
    "def http_parser(v):\n"
    "    return choice(v, (\"auto\", \"fast\", \"python\"), \"auto\")\n"
    "\n"
    "\n"
    "def reload_engine(v):\n"
    "    if v not in (\"auto\", \"poll\", \"inotify\"):\n"
    "        raise ValueError(\"%r is not one of: auto, poll, inotify\" % (v,))\n"
    "    return v\n"
    "\n"
    "\n"
    "def http_protocols(v):\n"
    "    if v is None:\n"
    "        return [\"h1\"]\n"
    "    if not isinstance(v, str):\n"
    "        raise TypeError(\"expected a comma-separated string such as 'h1,h2', got %s\" % _kind(v))\n"
    "    out = [p.strip().lower() for p in v.split(\",\") if p.strip()]\n"
    "    if not out:\n"
    "        return [\"h1\"]\n"
    "    for p in out:\n"
    "        if p not in (\"h1\", \"h2\"):\n"
    "            raise ValueError(\"%r is not a protocol; use h1, h2 or h1,h2\" % p)\n"
    "    if len(out) != len(set(out)):\n"
    "        raise ValueError(\"%r names a protocol twice\" % v)\n"
    "    return out\n"
    "\n"
    "\n"
    "def dirty_gpus(v):\n"
    "    if v is None or v == \"\" or v == []:\n"
    "        return \"\"\n"
    "    if isinstance(v, (list, tuple)):\n"
    "        v = \",\".join(str(x) for x in v)\n"
    "    if not isinstance(v, str):\n"
    "        raise TypeError(\"expected 'auto' or device ids such as '0,1', got %s\" % _kind(v))\n"
    "    v = v.strip()\n"
    "    if v.lower() == \"auto\":\n"
    "        return \"auto\"\n"
    "    out = [x.strip() for x in v.split(\",\")]\n"
    "    if len(out) > 256:\n"
    "        raise ValueError(\"%d devices; at most 256\" % len(out))\n"
    "    for x in out:\n"
    "        if not x or not _re.fullmatch(r\"[A-Za-z0-9_.:-]{1,64}\", x):\n"
    "            raise ValueError(\"%r is not a device id; use 'auto' or ids such as 0,1,2,3\" % x)\n"
    "    return \",\".join(out)\n"
    "\n"
    "\n"
    "def auto_int(v):\n"
    "    if _re.match(r\"0(\\d)\", v, _re.IGNORECASE):\n"
    "        v = v.replace(\"0\", \"0o\", 1)\n"
    "    return int(v, 0)\n"
    "\n"
    "\n"
    "def show(v):\n"
    "    if callable(v) and not isinstance(v, (str, bytes)):\n"
    "        return \"<%s()>\" % getattr(v, \"__qualname__\", type(v).__qualname__)\n"
    "    return str(v)\n"
    "\n"
    "\n"
    "def load_config_file(path):\n"
    "    import importlib.machinery\n"
    "    import importlib.util\n"
    "    import sys\n"
    "    name = \"__config__\"\n"
    "    if _os.path.splitext(path)[1] in (\".py\", \".pyc\"):\n"
    "        spec = importlib.util.spec_from_file_location(name, path)\n"
    "    else:\n"
    "        sys.stderr.write(\"WARNING: config file %s has no .py extension; loading it as Python\\n\"\n"
    "                         % path)\n"
    "        loader = importlib.machinery.SourceFileLoader(name, path)\n"
    "        spec = importlib.util.spec_from_file_location(name, path, loader=loader)\n"
    "    mod = importlib.util.module_from_spec(spec)\n"
    "    sys.modules[name] = mod\n"
    "    spec.loader.exec_module(mod)\n"
    "    return vars(mod)\n"
    "\n"
    "\n"
    "def load_config_module(name):\n"
    "    import importlib\n"
    "    return vars(importlib.import_module(name))\n"
    "\n"
    "\n"
    "def describe_error(exc, path):\n"
    "    \"\"\"'PATH:LINE: Type: message' for an exception raised by a config file.\"\"\"\n"
    "    import traceback\n"
    "    line = None\n"
    "    if isinstance(exc, SyntaxError) and exc.lineno:\n"
    "        line = exc.lineno\n"
    "    else:\n"
    "        want = _os.path.abspath(path)\n"
    "        tb = exc.__traceback__\n"
    "        while tb is not None:\n"
    "            if _os.path.abspath(tb.tb_frame.f_code.co_filename) == want:\n"
    "                line = tb.tb_lineno\n"
    "            tb = tb.tb_next\n"
    "    last = traceback.format_exception_only(type(exc), exc)[-1].strip()\n"
    "    return \"%s:%s: %s\" % (path, line, last) if line else \"%s: %s\" % (path, last)\n"
    "\n"
    "\n"
    "def short_repr(v):\n"
    "    r = repr(v)\n"
    "    return r if len(r) <= 200 else r[:197] + \"...\"\n"
    "\n"
    "\n"
    "def chdir_to(path):\n"
    "    import sys\n"
    "    _os.chdir(path)\n"
    "    if path not in sys.path:\n"
    "        sys.path.insert(0, path)\n"
    "\n"
    "\n"
    "def apply_env(raw_env, software):\n"
    "    _os.environ[\"SERVER_SOFTWARE\"] = software  # as gunicorn's arbiter does\n"
    "    for e in raw_env or ():\n"
    "        if \"=\" not in e:\n"
    "            raise ValueError(\"raw_env entry %r is not KEY=VALUE; use -e KEY=VALUE\" % e)\n"
    "        k, v = e.split(\"=\", 1)\n"
    "        _os.environ[k] = v\n"
    "\n"
    "\n"
    "def apply_pythonpath(pp):\n"
    "    import sys\n"
    "    for p in pp.split(\",\"):\n"
    "        p = _os.path.abspath(p)\n"
    "        if p not in sys.path:\n"
    "            sys.path.insert(0, p)\n"
    "\n"
    "\n"
    "def config_default_path():\n"
    "    p = _os.path.join(_os.path.abspath(_os.getcwd()), \"gunicorn.conf.py\")\n"
    "    return p if _os.path.exists(p) else None\n"
    "\n"
    "\n"
    "def literal(s):\n"
    "    import ast\n"
    "    return ast.literal_eval(s)\n";

static PyObject *helpers; /* owned module, created on first use */

PyObject *cg_conf_helpers(struct cg_err *err)
{
    if (helpers != NULL) {
        return helpers;
    }
    helpers = cg_py_module_from_source("_cgunicorn_conf", helpers_src,
                                       "<cgunicorn>/config/cg_conf_check.c");
    if (helpers == NULL) {
        cg_err_from_python(err);
        cg_err_prefix(err, "config helpers");
    }
    return helpers;
}

/* Sets err from the pending exception: its message only (validators phrase it
 * for the user), and clears it. */
void cg_conf_err_from_exc(struct cg_err *err)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL, *s = NULL;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    s = value != NULL ? PyObject_Str(value) : NULL;
    if (s != NULL && PyUnicode_Check(s)) {
        cg_err_set(err, "%s", PyUnicode_AsUTF8(s));
    } else {
        PyErr_Clear();
        cg_err_set(err, "invalid value");
    }
    Py_XDECREF(s);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* Calls helper `name` with the given arguments (borrowed). New reference, or
 * NULL with err. */
PyObject *cg_conf_helper_call(const char *name, struct cg_err *err, const char *fmt, ...)
{
    PyObject *mod = cg_conf_helpers(err); /* borrowed */
    PyObject *fn = NULL;
    PyObject *args = NULL;
    PyObject *res = NULL;
    va_list ap;

    if (mod == NULL) {
        return NULL;
    }
    fn = PyObject_GetAttrString(mod, name);
    if (fn == NULL) {
        cg_conf_err_from_exc(err);
        return NULL;
    }
    va_start(ap, fmt);
    args = Py_VaBuildValue(fmt, ap);
    va_end(ap);
    if (args != NULL && !PyTuple_Check(args)) {
        PyObject *t = PyTuple_Pack(1, args);
        Py_DECREF(args);
        args = t;
    }
    if (args != NULL) {
        res = PyObject_Call(fn, args, NULL);
    }
    if (res == NULL) {
        cg_conf_err_from_exc(err);
    }
    Py_XDECREF(args);
    Py_DECREF(fn);
    return res;
}

#define PY_CHECK(cname, pyname)                                                              \
    PyObject *cg_conf_check_##cname(const struct cg_conf_setting *s, PyObject *v,           \
                                    struct cg_err *err)                                      \
    {                                                                                        \
        (void)s;                                                                             \
        return cg_conf_helper_call(#pyname, err, "(O)", v);                                  \
    }

PY_CHECK(string, string)
PY_CHECK(bool, boolean)
PY_CHECK(dict, dictionary)
PY_CHECK(pos_int, pos_int)
PY_CHECK(as_is, as_is)
PY_CHECK(ssl_version, ssl_version)
PY_CHECK(str_list, str_list)
PY_CHECK(files_or_patterns, files_or_patterns)
PY_CHECK(comma_list, comma_list)
PY_CHECK(addr_list, addr_list)
PY_CHECK(class, klass)
PY_CHECK(post_request, post_request)
PY_CHECK(user, user)
PY_CHECK(group, group)
PY_CHECK(chdir, chdir)
PY_CHECK(statsd, statsd)
PY_CHECK(proxy_protocol, proxy_protocol)
PY_CHECK(http2_cleartext, http2_cleartext)
PY_CHECK(header_map, header_map)
PY_CHECK(asgi_loop, asgi_loop)
PY_CHECK(asgi_lifespan, asgi_lifespan)
PY_CHECK(http_parser, http_parser)
PY_CHECK(reload_engine, reload_engine)
PY_CHECK(http_protocols, http_protocols)
PY_CHECK(dirty_gpus, dirty_gpus)

PyObject *cg_conf_check_hook(const struct cg_conf_setting *s, PyObject *v, struct cg_err *err)
{
    return cg_conf_helper_call("hook", err, "(Oi)", v, s->arity);
}

/* HTTP/2 limits: RFC 9113 bounds. */
PyObject *cg_conf_check_h2_window(const struct cg_conf_setting *s, PyObject *v,
                                  struct cg_err *err)
{
    (void)s;
    return cg_conf_helper_call("int_range", err, "(OLL)", v, 0LL, 2147483647LL);
}

PyObject *cg_conf_check_h2_streams(const struct cg_conf_setting *s, PyObject *v,
                                   struct cg_err *err)
{
    (void)s;
    return cg_conf_helper_call("int_range", err, "(OLL)", v, 1LL, 2147483647LL);
}

PyObject *cg_conf_check_h2_frame(const struct cg_conf_setting *s, PyObject *v,
                                 struct cg_err *err)
{
    (void)s;
    return cg_conf_helper_call("int_range", err, "(OLL)", v, 16384LL, 16777215LL);
}

/* dirty_max_payload_size: 1 byte .. 2^62 (a memfd's size is an off_t). */
PyObject *cg_conf_check_payload_size(const struct cg_conf_setting *s, PyObject *v,
                                     struct cg_err *err)
{
    (void)s;
    return cg_conf_helper_call("int_range", err, "(OLL)", v, 1LL, 1LL << 62);
}
