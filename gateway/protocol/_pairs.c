/* Optional C speedup for the FastCGI codec: decoding a name-value pairs body.
 *
 * Why C here: every request's PARAMS body (about 20 pairs from nginx) is decoded on the
 * hot path, and the pure-Python loop costs ~230 ns a pair in CPython 3.11 (~5 us of the
 * ~37 us a hello-world request costs the sync worker, measured). This does the same in
 * well under 1 us. records.decode_pairs in Python stays the reference implementation: it
 * is used when this module is not built, and it produces the error for any body this one
 * rejects (ValueError here means "not a well-formed body", nothing more), so both give
 * the same RemoteProtocolError. tests/protocol/test_pairs_speedup.py checks they agree.
 *
 * decode(data: bytes, text: bool) -> list[tuple[bytes, bytes]] | list[tuple[str, str]]
 *   text: names and values decoded as latin-1 str (the CGI/WSGI native strings).
 * No I/O; the item cache (_pairs_items.h) is its only state, and the GIL guards it.
 */
#include "_pairs_items.h"

static PyObject *
decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode(data, text) takes 2 arguments");
        return NULL;
    }
    PyObject *data = args[0];
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "decode() needs bytes");
        return NULL;
    }
    int text = PyObject_IsTrue(args[1]);
    if (text < 0) {
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data);
    Py_ssize_t pos = 0;
    PyObject *pairs = PyList_New(0);
    if (pairs == NULL) {
        return NULL;
    }
    while (pos < end) {
        Py_ssize_t n = read_length(p, end, &pos);
        if (n < 0) {
            goto malformed;
        }
        Py_ssize_t v = read_length(p, end, &pos);
        if (v < 0 || n > end - pos || v > end - pos - n) {
            goto malformed;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            goto error;
        }
        Py_ssize_t slot = 2 * PyList_GET_SIZE(pairs);
        PyObject *name = make_item(p + pos, n, text, slot);
        if (name == NULL) {
            Py_DECREF(pair);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyObject *value = make_item(p + pos + n, v, text, slot + 1);
        if (value == NULL) {
            Py_DECREF(pair);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 1, value);
        int failed = PyList_Append(pairs, pair);
        Py_DECREF(pair);
        if (failed) {
            goto error;
        }
        pos += n + v;
    }
    return pairs;

malformed:
    PyErr_SetString(PyExc_ValueError, "malformed name-value pairs body");
error:
    Py_DECREF(pairs);
    return NULL;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "decode(data, text) -> list of (name, value) pairs; ValueError if malformed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pairs", "FastCGI name-value pairs decoder (C speedup).", 0, methods,
};

PyMODINIT_FUNC
PyInit__pairs(void)
{
    return PyModule_Create(&module);
}
