/* Optional C speedups for the FastCGI codec: two scanners that turn bytes into tuples.
 *
 * Why C here: every request's records are cut out of the received bytes, and every
 * request's PARAMS body (about 20 pairs from nginx) is decoded, on the hot path; in Python
 * each record costs a header unpack, bounds arithmetic and a slice, and each pair two
 * length reads and two slices. Neither scanner validates anything or keeps protocol
 * state: the codec (connection.py, in Python) looks every record up in its state table,
 * applies its limits and raises every protocol error. The Python twins in records.py are
 * the reference implementations, used when this module is not built or speedups are
 * switched off (FCGI_GATEWAY_NO_SPEEDUPS, gateway/speedups.py).
 * tests/protocol/test_pairs_fuzz.py and test_split_fuzz.py check they agree; CI runs them
 * on an ASan/UBSan build (scripts/sanitize).
 *
 * split(prev: bytes, data: bytes) -> (list[tuple[int, int, bytes]], bytes)
 *   The whole records of prev + data and the bytes after them (records.py_split_records).
 * decode(data: bytes, text: bool) -> list[tuple[bytes, bytes]] | list[tuple[str, str]]
 *   A name-value pairs body (records.py_decode_pairs); text: latin-1 str items. Any body
 *   it rejects (ValueError: "not a well-formed body", nothing more) goes through the
 *   Python decoder, which raises the precise RemoteProtocolError.
 * No I/O. The item and pair caches are the module's only state (multi-phase init, m_size set,
 * so each module object, one per interpreter, has its own); the GIL guards it.
 */
#include "_pairs_items.h"

#define FCGI_HEADER_LEN 8

/* (type, request id, content) */
static PyObject *
new_record(long type, long request_id, const unsigned char *content, Py_ssize_t size)
{
    PyObject *record = PyTuple_New(3);
    if (record == NULL) {
        return NULL;
    }
    PyObject *item = PyLong_FromLong(type);
    if (item == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(record, 0, item);
    item = PyLong_FromLong(request_id);
    if (item == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(record, 1, item);
    item = PyBytes_FromStringAndSize((const char *)content, size);
    if (item == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(record, 2, item);
    return record;

error:
    Py_DECREF(record);
    return NULL;
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
    pairs_cache *cache = PyModule_GetState(module);
    if (cache == NULL) {
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
        Py_ssize_t index = PyList_GET_SIZE(pairs);
        PyObject *name = make_item(cache, p + pos, n, text, 2 * index);
        if (name == NULL) {
            goto error;
        }
        PyObject *value = make_item(cache, p + pos + n, v, text, 2 * index + 1);
        if (value == NULL) {
            Py_DECREF(name);
            goto error;
        }
        PyObject *pair = make_pair(cache, text, index, name, value);
        if (pair == NULL) {
            goto error;
        }
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

/* split(prev: bytes, data: bytes) -> (records, rest)
 * The whole records of prev + data, as a list of (type, request id, content) tuples
 * (padding skipped), and the bytes after the last of them. It stops at the first header
 * that is cut short, whose record is cut short, or whose version is not 1: the codec
 * looks at what is left, so every protocol error is raised in Python. */
static PyObject *
split(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "split(prev, data) takes 2 arguments");
        return NULL;
    }
    PyObject *prev = args[0], *data = args[1];
    if (!PyBytes_CheckExact(prev) || !PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "split() needs bytes");
        return NULL;
    }
    PyObject *buf;
    if (PyBytes_GET_SIZE(prev) == 0) {
        buf = Py_NewRef(data);
    }
    else if (PyBytes_GET_SIZE(data) > PY_SSIZE_T_MAX - PyBytes_GET_SIZE(prev)) {
        return PyErr_NoMemory();
    }
    else {
        buf = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(prev) + PyBytes_GET_SIZE(data));
        if (buf == NULL) {
            return NULL;
        }
        memcpy(PyBytes_AS_STRING(buf), PyBytes_AS_STRING(prev), (size_t)PyBytes_GET_SIZE(prev));
        memcpy(PyBytes_AS_STRING(buf) + PyBytes_GET_SIZE(prev), PyBytes_AS_STRING(data),
               (size_t)PyBytes_GET_SIZE(data));
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(buf);
    Py_ssize_t end = PyBytes_GET_SIZE(buf);
    Py_ssize_t pos = 0;
    PyObject *records = PyList_New(0);
    if (records == NULL) {
        Py_DECREF(buf);
        return NULL;
    }
    while (end - pos >= FCGI_HEADER_LEN && p[pos] == 1) {
        const unsigned char *h = p + pos;
        Py_ssize_t clen = ((Py_ssize_t)h[4] << 8) | h[5];
        Py_ssize_t start = pos + FCGI_HEADER_LEN;
        if (clen + h[6] > end - start) {
            break;
        }
        PyObject *record = new_record(h[1], ((long)h[2] << 8) | h[3], p + start, clen);
        if (record == NULL) {
            goto error;
        }
        int failed = PyList_Append(records, record);
        Py_DECREF(record);
        if (failed) {
            goto error;
        }
        pos = start + clen + h[6];
    }
    PyObject *rest;
    if (pos == 0) {
        rest = buf; /* the reference is handed over */
        buf = NULL;
    }
    else {
        rest = PyBytes_FromStringAndSize((const char *)(p + pos), end - pos);
        Py_CLEAR(buf);
        if (rest == NULL) {
            goto error;
        }
    }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(rest);
        goto error;
    }
    PyTuple_SET_ITEM(result, 0, records);
    PyTuple_SET_ITEM(result, 1, rest);
    return result;

error:
    Py_XDECREF(buf);
    Py_DECREF(records);
    return NULL;
}

/* -- module state: the item cache ------------------------------------------------------ */

static int
pairs_traverse(PyObject *module, visitproc visit, void *arg)
{
    pairs_cache *cache = PyModule_GetState(module);
    if (cache != NULL) {
        for (int row = 0; row < 2; row++) {
            for (int i = 0; i < CACHED_ITEMS; i++) {
                Py_VISIT(cache->items[row][i]);
            }
            for (int i = 0; i < CACHED_PAIRS; i++) {
                Py_VISIT(cache->pairs[row][i]);
            }
        }
    }
    return 0;
}

static int
pairs_clear(PyObject *module)
{
    pairs_cache *cache = PyModule_GetState(module);
    if (cache != NULL) {
        for (int row = 0; row < 2; row++) {
            for (int i = 0; i < CACHED_ITEMS; i++) {
                Py_CLEAR(cache->items[row][i]);
            }
            for (int i = 0; i < CACHED_PAIRS; i++) {
                Py_CLEAR(cache->pairs[row][i]);
            }
        }
    }
    return 0;
}

static void
pairs_free(void *module)
{
    (void)pairs_clear((PyObject *)module);
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "decode(data, text) -> list of (name, value) pairs; ValueError if malformed."},
    {"split", (PyCFunction)(void (*)(void))split, METH_FASTCALL,
     "split(prev, data) -> (list of (type, request_id, content), the bytes after them)."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_pairs",
    .m_doc = "FastCGI record splitter and name-value pairs decoder (C speedups).",
    .m_size = sizeof(pairs_cache),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = pairs_traverse,
    .m_clear = pairs_clear,
    .m_free = pairs_free,
};

PyMODINIT_FUNC
PyInit__pairs(void)
{
    return PyModuleDef_Init(&module_def);
}
