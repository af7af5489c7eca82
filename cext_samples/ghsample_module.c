/*
 * _ghsample_<variant>: a CPython extension in plain C, like a real database driver: it links
 * against libghsample_<variant>.so (found through RUNPATH $ORIGIN) and calls ghs_request()
 * with the GIL released (default) or held.
 *
 * Built once per variant with -DGHS_MODULE_NAME=_ghsample_<variant> (build_samples.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>

#include "ghsample.h"

#ifndef GHS_MODULE_NAME
#error "define GHS_MODULE_NAME (e.g. -DGHS_MODULE_NAME=_ghsample_now)"
#endif

#define GHS_STR2(x) #x
#define GHS_STR(x) GHS_STR2(x)
#define GHS_CAT2(a, b) a##b
#define GHS_CAT(a, b) GHS_CAT2(a, b)

static int known_style(const char *style)
{
    const char *name;
    int i;
    for (i = 0; (name = ghs_style_name(i)) != NULL; i++) {
        if (strcmp(name, style) == 0)
            return 1;
    }
    return 0;
}

PyDoc_STRVAR(request_doc,
             "request(style, target, delay_ms, payload, release_gil=True) -> bytes\n\n"
             "One round trip with the delay server through ghs_request().\n"
             "target: int port on 127.0.0.1 (TCP, or UDP for style 'udp'), a str/bytes/path\n"
             "unix socket path, or None for the sleep styles.  Raises OSError(errno, strerror)\n"
             "on failure.  With release_gil=False the call blocks holding the GIL.");

static PyObject *ghs_py_request(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"style", "target", "delay_ms", "payload", "release_gil", NULL};
    const char *style;
    PyObject *target;
    int delay_ms;
    Py_buffer payload;
    int release_gil = 1;
    PyObject *path = NULL, *out = NULL;
    const char *host = NULL;
    int port = 0, rc;
    size_t outlen = 0;

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sOiy*|p:request", kwlist, &style, &target,
                                     &delay_ms, &payload, &release_gil))
        return NULL;

    if (!known_style(style)) {
        PyErr_Format(PyExc_ValueError, "unknown request style '%s'", style);
        goto fail;
    }
    if (delay_ms < 0) {
        PyErr_SetString(PyExc_ValueError, "delay_ms must be >= 0");
        goto fail;
    }
    if (target == Py_None) {
        host = NULL;
    } else if (PyLong_Check(target)) {
        long p;
        if (strcmp(style, "unix") == 0) {
            PyErr_SetString(PyExc_TypeError, "style 'unix' needs a socket path, not a port");
            goto fail;
        }
        p = PyLong_AsLong(target);
        if (p == -1 && PyErr_Occurred())
            goto fail;
        if (p <= 0 || p > 65535) {
            PyErr_Format(PyExc_ValueError, "port out of range: %ld", p);
            goto fail;
        }
        port = (int)p;
        host = "127.0.0.1";
    } else {
        if (!PyUnicode_FSConverter(target, &path))
            goto fail;
        host = PyBytes_AS_STRING(path);
    }

    out = PyBytes_FromStringAndSize(NULL, payload.len);
    if (!out)
        goto fail;

    if (release_gil) {
        Py_BEGIN_ALLOW_THREADS
        rc = ghs_request(style, host, port, delay_ms, (const unsigned char *)payload.buf,
                         (size_t)payload.len, (unsigned char *)PyBytes_AS_STRING(out),
                         (size_t)payload.len, &outlen);
        Py_END_ALLOW_THREADS
    } else {
        rc = ghs_request(style, host, port, delay_ms, (const unsigned char *)payload.buf,
                         (size_t)payload.len, (unsigned char *)PyBytes_AS_STRING(out),
                         (size_t)payload.len, &outlen);
    }

    PyBuffer_Release(&payload);
    Py_XDECREF(path);
    if (rc != 0) {
        Py_DECREF(out);
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if ((Py_ssize_t)outlen != PyBytes_GET_SIZE(out)) {
        if (_PyBytes_Resize(&out, (Py_ssize_t)outlen) < 0)
            return NULL;
    }
    return out;

fail:
    PyBuffer_Release(&payload);
    Py_XDECREF(path);
    Py_XDECREF(out);
    return NULL;
}

PyDoc_STRVAR(library_path_doc,
             "library_path() -> str\n\n"
             "Path of the libghsample shared object this extension is bound to (dladdr).");

static PyObject *ghs_py_library_path(PyObject *self, PyObject *unused)
{
    Dl_info info;
    (void)self;
    (void)unused;
    if (!dladdr((void *)&ghs_request, &info) || !info.dli_fname) {
        PyErr_SetString(PyExc_RuntimeError, "dladdr() could not locate ghs_request");
        return NULL;
    }
    return PyUnicode_DecodeFSDefault(info.dli_fname);
}

PyDoc_STRVAR(recv_with_error_set_doc,
             "recv_with_error_set(fd, n) -> (result, errno, data, error_kept)\n\n"
             "What psycopg2 does (pq_raise, then more libpq calls): set a Python exception,\n"
             "release the GIL, recv(fd, n) through libghsample, take the GIL back.  error_kept\n"
             "tells whether the exception set before is still the one set afterwards (it is\n"
             "then cleared, and the call returns normally).");

static PyObject *ghs_py_recv_with_error_set(PyObject *self, PyObject *args)
{
    int fd, e, kept;
    Py_ssize_t n;
    ssize_t r;
    char buf[4096];
    PyObject *type, *value, *tb;
    (void)self;
    if (!PyArg_ParseTuple(args, "in", &fd, &n))
        return NULL;
    if (n < 0 || n > (Py_ssize_t)sizeof(buf)) {
        PyErr_SetString(PyExc_ValueError, "n must be in [0, 4096]");
        return NULL;
    }
    PyErr_SetString(PyExc_LookupError, "the driver's own error, set before the wait");
    Py_BEGIN_ALLOW_THREADS
    r = ghs_recv(fd, buf, (size_t)n, 0);
    e = errno;
    Py_END_ALLOW_THREADS
    PyErr_Fetch(&type, &value, &tb);
    kept = type == PyExc_LookupError && value != NULL;
    if (kept) {
        PyObject *msg = PyObject_Str(value);
        kept = msg != NULL && PyUnicode_CompareWithASCIIString(
                                  msg, "the driver's own error, set before the wait") == 0;
        Py_XDECREF(msg);
        PyErr_Clear();
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return Py_BuildValue("nNy#N", (Py_ssize_t)r, PyLong_FromLong(e), buf,
                         (Py_ssize_t)(r > 0 ? r : 0), PyBool_FromLong(kept));
}

static PyMethodDef ghs_methods[] = {
    {"recv_with_error_set", ghs_py_recv_with_error_set, METH_VARARGS, recv_with_error_set_doc},
    {"request", (PyCFunction)(void (*)(void))ghs_py_request, METH_VARARGS | METH_KEYWORDS,
     request_doc},
    {"library_path", ghs_py_library_path, METH_NOARGS, library_path_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ghs_module = {
    PyModuleDef_HEAD_INIT,
    GHS_STR(GHS_MODULE_NAME),
    "greenhook sample C client (one link-flag variant of libghsample).",
    -1,
    ghs_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC GHS_CAT(PyInit_, GHS_MODULE_NAME)(void)
{
    PyObject *m, *styles, *name;
    int i;

    m = PyModule_Create(&ghs_module);
    if (!m)
        return NULL;
    styles = PyList_New(0);
    if (!styles)
        goto fail;
    for (i = 0; ghs_style_name(i) != NULL; i++) {
        name = PyUnicode_FromString(ghs_style_name(i));
        if (!name || PyList_Append(styles, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(styles);
            goto fail;
        }
        Py_DECREF(name);
    }
    name = PyList_AsTuple(styles);
    Py_DECREF(styles);
    if (!name || PyModule_AddObject(m, "STYLES", name) < 0) {
        Py_XDECREF(name);
        goto fail;
    }
    if (PyModule_AddStringConstant(m, "VARIANT", ghs_variant()) < 0)
        goto fail;
    return m;

fail:
    Py_DECREF(m);
    return NULL;
}
