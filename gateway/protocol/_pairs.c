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
 * No I/O, no global state; the GIL is held throughout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Read a 1- or 4-byte FastCGI length at *pos; -1 when the body ends inside it. */
static Py_ssize_t
read_length(const unsigned char *p, Py_ssize_t end, Py_ssize_t *pos)
{
    Py_ssize_t i = *pos;
    if (i >= end) {
        return -1;
    }
    if (!(p[i] & 0x80)) {
        *pos = i + 1;
        return p[i];
    }
    if (end - i < 4) {
        return -1;
    }
    *pos = i + 4;
    return ((Py_ssize_t)(p[i] & 0x7f) << 24) | ((Py_ssize_t)p[i + 1] << 16) |
           ((Py_ssize_t)p[i + 2] << 8) | (Py_ssize_t)p[i + 3];
}

/* The items returned for the previous body, by position (names and values, both modes).
 * nginx sends the same names in the same order, and most values repeat (DOCUMENT_ROOT,
 * SERVER_SOFTWARE, HTTP_HOST...): an item equal to the one at its position last time is
 * that same object again, so no allocation, and a name's hash is already computed when
 * the environ or scope dict is filled. Items are immutable; the GIL guards this table. */
#define CACHED_ITEMS 128
#define CACHED_SIZE 256
static PyObject *cache[2][CACHED_ITEMS];

static PyObject *
new_item(const unsigned char *start, Py_ssize_t size, int text)
{
    if (text) {
        return PyUnicode_DecodeLatin1((const char *)start, size, NULL);
    }
    return PyBytes_FromStringAndSize((const char *)start, size);
}

static PyObject *
make_item(const unsigned char *start, Py_ssize_t size, int text, Py_ssize_t slot)
{
    if (slot >= CACHED_ITEMS || size > CACHED_SIZE) {
        return new_item(start, size, text);
    }
    PyObject *old = cache[text][slot];
    if (old != NULL) {
        /* latin-1 str of 1-byte kind (any latin-1 text is) or bytes: compare the bytes */
        const void *data = text ? PyUnicode_DATA(old) : (const void *)PyBytes_AS_STRING(old);
        Py_ssize_t len = text ? PyUnicode_GET_LENGTH(old) : PyBytes_GET_SIZE(old);
        if (len == size && memcmp(data, start, (size_t)size) == 0) {
            Py_INCREF(old);
            return old;
        }
    }
    PyObject *item = new_item(start, size, text);
    if (item != NULL) {
        Py_INCREF(item);
        cache[text][slot] = item;
        Py_XDECREF(old);
    }
    return item;
}

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
