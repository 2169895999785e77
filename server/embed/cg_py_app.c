/* Application loading (see cg_py_app.h). The lookup rules are gunicorn's
 * (util.import_app): the logic is a small embedded Python module, written for
 * cgunicorn, because it is all imports, attribute lookups and ast parsing. */
#include "cg_py_app.h"
#include "cg_py.h"
#include "cg_py_source.h"

static const char app_src[] =
    "import importlib\n"
    "import keyword\n"
    "import os\n"
    "import sys\n"
    "\n"
    "\n"
    "class AppImportError(ImportError):\n"
    "    pass\n"
    "\n"
    "\n"
    "def _wrong_args(f):\n"
    "    tb = sys.exc_info()[2]\n"
    "    code = getattr(f, \"__code__\", None)\n"
    "    while tb is not None:\n"
    "        if tb.tb_frame.f_code is code:\n"
    "            return False\n"
    "        tb = tb.tb_next\n"
    "    return True\n"
    "\n"
    "\n"
    "def load(uri):\n"
    "    module, sep, obj = uri.partition(\":\")\n"
    "    if not sep:\n"
    "        obj = \"application\"\n"
    "    try:\n"
    "        mod = importlib.import_module(module)\n"
    "    except ImportError:\n"
    "        if module.endswith(\".py\") and os.path.exists(module):\n"
    "            raise ImportError(\"Failed to find application, did you mean '%s:%s'?\"\n"
    "                              % (module.rsplit(\".\", 1)[0], obj)) from None\n"
    "        raise\n"
    "    if obj.isidentifier() and not keyword.iskeyword(obj):\n"
    "        return _attribute(mod, module, obj, obj, None, None)\n"
    "    import ast  # only for factory calls: keeps it out of workers' memory\n"
    "    try:\n"
    "        expr = ast.parse(obj, mode=\"eval\").body\n"
    "    except SyntaxError:\n"
    "        raise AppImportError(\"Failed to parse %r as an attribute name or function call.\" % obj) from None\n"
    "    args = kwargs = None\n"
    "    if isinstance(expr, ast.Name):\n"
    "        name = expr.id\n"
    "    elif isinstance(expr, ast.Call):\n"
    "        if not isinstance(expr.func, ast.Name):\n"
    "            raise AppImportError(\"Function reference must be a simple name: %r\" % obj)\n"
    "        name = expr.func.id\n"
    "        try:\n"
    "            args = [ast.literal_eval(a) for a in expr.args]\n"
    "            kwargs = {k.arg: ast.literal_eval(k.value) for k in expr.keywords}\n"
    "        except ValueError:\n"
    "            raise AppImportError(\"Failed to parse arguments as literal values: %r\" % obj) from None\n"
    "    else:\n"
    "        raise AppImportError(\"Failed to parse %r as an attribute name or function call.\" % obj)\n"
    "    return _attribute(mod, module, obj, name, args, kwargs)\n"
    "\n"
    "\n"
    "def _attribute(mod, module, obj, name, args, kwargs):\n"
    "    try:\n"
    "        app = getattr(mod, name)\n"
    "    except AttributeError:\n"
    "        raise AppImportError(\"Failed to find attribute %r in %r.\" % (name, module)) from None\n"
    "    if args is not None:\n"
    "        try:\n"
    "            app = app(*args, **kwargs)\n"
    "        except TypeError as e:\n"
    "            if _wrong_args(app):\n"
    "                import traceback\n"
    "                raise AppImportError(\"\".join(traceback.format_exception_only(TypeError, e)).strip()) from None\n"
    "            raise\n"
    "    if app is None:\n"
    "        raise AppImportError(\"Failed to find application object: %r\" % obj)\n"
    "    if not callable(app):\n"
    "        raise AppImportError(\"Application object must be callable.\")\n"
    "    return app\n"
    "\n"
    "\n"
    "def describe(exc):\n"
    "    if isinstance(exc, AppImportError):\n"
    "        return str(exc)\n"
    "    import traceback\n"
    "    return traceback.format_exception_only(type(exc), exc)[-1].strip()\n";

static PyObject *app_mod; /* owned; created on first use */

/* The helper module (borrowed), or NULL with an exception set. */
static PyObject *helpers(void)
{
    if (app_mod == NULL) {
        app_mod = cg_py_module_from_source("_cgunicorn_app", app_src,
                                           "<cgunicorn>/server/embed/cg_py_app.c");
    }
    return app_mod;
}

PyObject *cg_py_app_load(const char *uri, PyObject **traceback, struct cg_err *err)
{
    PyObject *mod = helpers(); /* borrowed */
    PyObject *app = NULL;
    PyObject *type = NULL, *value = NULL, *tb = NULL, *desc = NULL;

    if (traceback != NULL) {
        *traceback = NULL;
    }
    if (mod != NULL) {
        app = PyObject_CallMethod(mod, "load", "s", uri);
    }
    if (app != NULL) {
        return app;
    }
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    desc = mod != NULL && value != NULL ? PyObject_CallMethod(mod, "describe", "O", value) : NULL;
    if (desc != NULL && PyUnicode_Check(desc)) {
        cg_err_set(err, "%s", PyUnicode_AsUTF8(desc));
    } else {
        PyErr_Clear();
        cg_err_set(err, "cannot load the application '%s'", uri);
    }
    if (traceback != NULL && type != NULL) {
        Py_XINCREF(type);
        Py_XINCREF(value);
        Py_XINCREF(tb);
        PyErr_Restore(type, value, tb);
        *traceback = cg_py_format_exception();
    }
    PyErr_Clear();
    Py_XDECREF(desc);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return NULL;
}
